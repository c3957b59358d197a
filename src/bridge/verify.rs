//! Order verification: re-read the order from Cartpanda's API and check each conversion of the
//! delivery against it (see [`crate::inbound::verify`]), before anything is claimed or sent.

use super::Bridge;
use crate::conversion::rules::Conversion;
use crate::inbound::auth::Secret;
use crate::inbound::verify::{self, VerifyError};
use crate::inbound::webhook::Order;

impl Bridge {
    /// Re-reads the order from Cartpanda's API and checks each of the delivery's conversions
    /// against it; one not confirmed refuses the whole delivery.
    pub async fn verify(
        &self,
        order_id: &str,
        order: &Order,
        conversions: &[Conversion<'_>],
        token: &Secret,
    ) -> Result<(), VerifyError> {
        let template = &self.config.cartpanda_order_url;
        let slug = order
            .shop
            .as_ref()
            .and_then(|s| s.slug.get())
            .or_else(|| order.shop_info.as_ref().and_then(|s| s.slug.get()));
        let slug = match slug {
            Some(slug) => slug,
            None if template.contains("{shop_slug}") => {
                return Err(VerifyError::NoShop(order_id.to_owned()));
            }
            None => "",
        };
        let source = self
            .orders
            .as_ref()
            .ok_or_else(|| VerifyError::Unavailable("no Cartpanda API client".to_owned()))?;
        match source
            .fetch(&verify::order_url(template, slug, order_id), token)
            .await?
        {
            None => Err(VerifyError::NotFound(order_id.to_owned())),
            Some(api) => verify::compare(order_id, order, &api, conversions),
        }
    }
}
