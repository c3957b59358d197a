//! Render without claiming or sending: the `?dry_run=1` request flag, and test orders when
//! `SEND_TEST_ORDERS` is off. Also the one render of a conversion's postback.

use super::{Bridge, ConversionReport, Outcome, Report};
use crate::conversion::rules::Conversion;
use crate::inbound::webhook::Order;
use crate::ops::clock::random_u64;
use crate::ops::config::Profile;
use crate::postback::values::MacroContext;

impl Bridge {
    /// Renders the postbacks of `conversions` without claiming or sending anything.
    pub fn preview(
        &self,
        profile: &Profile,
        order_id: &str,
        order: &Order,
        conversions: &[Conversion<'_>],
    ) -> Report {
        let conversions = conversions
            .iter()
            .map(|conversion| {
                let mut entry = entry(conversion, Outcome::DryRun);
                entry.postback = Some(render(profile, order_id, order, conversion).into());
                entry
            })
            .collect();
        Report { conversions }
    }
}

/// A report entry for `conversion` with only its outcome.
pub(super) fn entry(conversion: &Conversion<'_>, outcome: Outcome) -> ConversionReport {
    ConversionReport::new(&conversion.event_id, &conversion.conversion_type, outcome)
}

/// The postback of one conversion, rendered from the shop's template.
pub(super) fn render(
    profile: &Profile,
    order_id: &str,
    order: &Order,
    conversion: &Conversion<'_>,
) -> url::Url {
    let context = MacroContext {
        order,
        order_id,
        conversion,
        random: random_u64() % 1_000_000_000,
        normalize: profile.normalize_pii,
    };
    profile.postback.render(|m| context.value(m))
}
