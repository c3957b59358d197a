//! One authenticated delivery, decided: classify it, then skip it (logged and counted; a test
//! order answered with what would have been sent), preview it (`?dry_run=1`), verify the order
//! (when the shop has a Cartpanda API token), or process it.

use super::report::{Answer, Handled};
use super::{Bridge, ConversionReport, Intake, Report};
use crate::conversion::classify::{self, Classified, Decision};
use crate::conversion::clickid;
use crate::conversion::fields;
use crate::conversion::rules;
use crate::conversion::rules::{Conversion, Rules, Skip};
use crate::inbound::error::AppError;
use crate::inbound::money;
use crate::inbound::webhook::{Delivery, EventField, Order, OrderField, ParseError};
use crate::ledger::claim::Via;
use crate::ledger::notes;
use crate::ledger::refusal::Refusal;
use crate::ops::config::Profile;

/// What the request asks beside its delivery.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryOptions {
    /// `?dry_run=1`: render and return the postbacks, claim and send nothing.
    pub dry_run: bool,
    /// The invocation's deadline, epoch milliseconds; `None` gives [`super::DEFAULT_BUDGET`].
    pub deadline_ms: Option<i64>,
    /// The route it came by (`webhook` or `s2s`), recorded on what it leaves (`via`).
    pub via: Via,
}

impl Bridge {
    /// Decides and does what one authenticated delivery asks. Errors are refusals before
    /// anything was claimed (an unprocessable order, an order Cartpanda's API does not confirm);
    /// a 422 also leaves a refusal record in the ledger and counts in `Refused`.
    pub async fn deliver(
        &self,
        profile: &Profile,
        mut delivery: Delivery,
        options: DeliveryOptions,
    ) -> Result<Answer, AppError> {
        clickid::apply_to_delivery(&mut delivery, &profile.click_id_sources);
        let delivery = &delivery;
        let result = self.decide_and_do(profile, delivery, options).await;
        if let Err(err) = &result {
            self.note_refusal(profile, delivery, err, options.via).await;
        }
        result
    }

    /// Records a 422 in the ledger (`refused#…`) and counts it. A failed write is logged and
    /// changes nothing: the answer stays 422.
    async fn note_refusal(&self, profile: &Profile, delivery: &Delivery, err: &AppError, via: Via) {
        let Some((field, reason)) = err.refused_field() else {
            return;
        };
        let refusal = Refusal {
            shop: profile.shop.clone(),
            order_id: match &delivery.order {
                OrderField::Object(order) => fields::order_id(&order.id).ok(),
                _ => None,
            },
            event: match &delivery.event {
                EventField::Name(name) => name.clone(),
                _ => String::new(),
            },
            field,
            reason,
            at_ms: self.clock.now_ms(),
            via: Some(via),
        };
        crate::ops::metrics::refused(&refusal.field_class());
        if let Err(write) = self.ledger.note_refusal(&refusal).await {
            tracing::error!(
                shop = profile.shop.as_deref(),
                order_id = refusal.order_id.as_deref(),
                event = %refusal.event,
                field = %refusal.field,
                error = %write,
                "the refusal could not be recorded; still answered 422"
            );
        }
    }

    async fn decide_and_do(
        &self,
        profile: &Profile,
        delivery: &Delivery,
        options: DeliveryOptions,
    ) -> Result<Answer, AppError> {
        let classified = self.age_rule(classify::classify(delivery, &profile.rules)?);
        count_cartx_test(&classified, &profile.rules);
        if let Some((formatted, cents)) = classified.total_disagreement {
            tracing::warn!(
                shop = profile.shop.as_deref(),
                order_id = classified.order_id.as_deref().unwrap_or_default(),
                event = classified.event,
                total_price = %money::format_sum(formatted),
                unformatted_total_price = %money::format_sum(cents),
                "the formatted total disagrees with the total in cents; the cents win"
            );
        }
        let result = match (&classified.decision, classified.order) {
            (Decision::Skip(reason), _) => Handled::Skipped {
                reason: *reason,
                preview: self
                    .skip(profile, delivery, &classified, *reason, options.via)
                    .await,
            },
            (Decision::Convert(conversions), Some(order)) => {
                let order_id = classified.order_id.as_deref().unwrap_or_default();
                let report = self
                    .convert(
                        profile,
                        classified.event,
                        order_id,
                        order,
                        conversions,
                        options,
                    )
                    .await?;
                Handled::Converted(report)
            }
            (Decision::Convert(_), None) => {
                return Err(ParseError::Shape("order missing".to_owned()).into());
            }
        };
        Ok(Answer {
            order_id: classified.order_id.clone(),
            event: classified.event.to_owned(),
            result,
        })
    }

    /// A delivery that converts: previewed when asked, else verified (when configured) and
    /// processed.
    async fn convert(
        &self,
        profile: &Profile,
        event: &str,
        order_id: &str,
        order: &Order,
        conversions: &[Conversion<'_>],
        options: DeliveryOptions,
    ) -> Result<Report, AppError> {
        if options.dry_run {
            tracing::info!(
                shop = profile.shop.as_deref(),
                order_id,
                event,
                outcome = "dry_run",
                cartx_test = rules::is_cartx_test(order),
                "dry run requested; nothing claimed or sent"
            );
            return Ok(self.preview(profile, order_id, order, conversions));
        }
        if let Some(token) = &profile.cartpanda_api_token {
            // Every conversion is checked; one not confirmed refuses the delivery (422).
            self.verify(order_id, order, conversions, token).await?;
        }
        Ok(self
            .process(
                profile,
                event,
                order_id,
                order,
                conversions,
                Intake {
                    via: options.via,
                    deadline_ms: options.deadline_ms,
                },
            )
            .await)
    }

    /// The age rule, which the webhook and S2S path and reconciliation all apply to what they
    /// classified before anything is claimed: an order that would convert but is older than the
    /// ledger's memory ([`rules::too_old`] at the bridge's clock and `DEDUP_TTL_DAYS`) is skipped
    /// instead ([`Skip::TooOld`]).
    pub fn age_rule<'a>(&self, mut classified: Classified<'a>) -> Classified<'a> {
        if let (Decision::Convert(_), Some(order)) = (&classified.decision, classified.order) {
            if let Some(skip) = rules::too_old(order, self.clock.now_ms(), self.config.ttl_days) {
                classified.decision = Decision::Skip(skip);
            }
        }
        classified
    }

    /// Counts (`TooOld`) and notes (`too_old`) an order older than the ledger's memory, so the
    /// report lists it; nothing is claimed or sent. `via`: the input that brought it.
    pub async fn note_too_old(&self, shop: Option<&str>, order_id: &str, event: &str, via: Via) {
        crate::ops::metrics::too_old();
        self.leave_note(shop, (order_id, event), notes::TOO_OLD, via)
            .await;
    }

    /// Leaves a note of an order not sent, so the report lists it.
    async fn leave_note(
        &self,
        shop: Option<&str>,
        (order_id, event): (&str, &str),
        reason: &str,
        via: Via,
    ) {
        let note = notes::Note::new(
            shop,
            order_id,
            event,
            reason,
            self.clock.now_ms(),
            self.config.ttl_days,
        )
        .with_via(via);
        notes::leave(self.ledger.as_ref(), &note).await;
    }

    /// Notes (an order without a click ID or older than the ledger's memory), logs and counts a
    /// skipped delivery; a test order is answered with the postbacks it would have sent
    /// (classified again with test orders let through).
    async fn skip(
        &self,
        profile: &Profile,
        delivery: &Delivery,
        classified: &Classified<'_>,
        reason: Skip,
        via: Via,
    ) -> Vec<ConversionReport> {
        let order_id = classified.order_id.as_deref().unwrap_or_default();
        let (shop, event) = (profile.shop.as_deref(), classified.event);
        match reason {
            _ if classified.order_id.is_none() => {}
            Skip::NoClickId => {
                self.leave_note(shop, (order_id, event), notes::NO_CLICK_ID, via)
                    .await
            }
            Skip::TooOld { .. } => self.note_too_old(shop, order_id, event, via).await,
            _ => {}
        }
        tracing::info!(
            shop = profile.shop.as_deref(),
            order_id,
            event = classified.event,
            outcome = "skipped",
            reason = reason.code(),
            cartx_test = classified.order.is_some_and(rules::is_cartx_test),
            "delivery skipped"
        );
        crate::ops::metrics::skipped(reason.code());
        if reason != Skip::TestOrder {
            return Vec::new();
        }
        let send_all = Rules {
            send_test_orders: true,
            ..profile.rules.clone()
        };
        match classify::classify(delivery, &send_all) {
            Ok(Classified {
                decision: Decision::Convert(conversions),
                order: Some(order),
                ..
            }) => {
                self.preview(profile, order_id, order, &conversions)
                    .conversions
            }
            _ => Vec::new(),
        }
    }
}

/// Counts orders marked only by `is_cartx_test`, by how the rules treat them (metric
/// `CartxTestOrders` by `TreatedAs`).
fn count_cartx_test(classified: &Classified<'_>, rules: &Rules) {
    if let Some(order) = classified.order.filter(|o| rules::is_cartx_test(o)) {
        crate::ops::metrics::cartx_test(rules.is_test(order));
    }
}
