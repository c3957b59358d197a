//! The service that decides what one delivery becomes, a file per step:
//!
//! - [`deliver`]: classify an authenticated delivery, then skip it, preview it (`?dry_run=1`),
//!   verify the order against Cartpanda's API, or process it;
//! - [`preview`]: render the postbacks without claiming or sending (dry runs, test orders);
//! - [`verify`]: re-read the order from Cartpanda's API;
//! - [`process`]: for each conversion, claim → render → send → record (or queue or release);
//! - [`former`]: an S2S shop's upsell claimed under its new event ID, looked up under the IDs
//!   earlier versions gave it;
//! - [`report`]: the outcomes, the service's [`Answer`], and the status table.
//!
//! It talks to the world only through the [`Ledger`], [`Tracker`], [`Clock`], queue, shop cache
//! and order source it is given; [`crate::inbound::http`] is the thin adapter in front of it.

mod deliver;
pub(crate) mod former;
mod preview;
mod process;
mod report;
mod verify;

pub use deliver::DeliveryOptions;
pub use process::Intake;
pub use report::{Answer, ConversionReport, Handled, Outcome, Report};

use crate::inbound::verify::OrderSource;
use crate::ledger::claim::{Ledger, LedgerError};
use crate::ops::clock::Clock;
use crate::ops::config::{Config, Profile};
use crate::postback::redtrack::Tracker;
use crate::postback::send::Courier;
use crate::redrive::queue::RedriveQueue;
use crate::shops::directory::ShopCache;
use std::sync::Arc;
use std::time::Duration;

/// The configured bridge with its clients, built once at cold start. (The name stays: the crate
/// is "the bridge", and the binaries, tests and benches build it by that name.)
pub struct Bridge {
    pub config: Config,
    pub ledger: Arc<dyn Ledger>,
    pub tracker: Arc<dyn Tracker>,
    pub clock: Arc<dyn Clock>,
    /// Where conversions go when RedTrack stays down for the whole invocation; without one they
    /// are released and the delivery answered 502.
    pub queue: Option<Arc<dyn RedriveQueue>>,
    /// Named shops (`POST /cartpanda/{shop}`), read from the ledger's table; `None` serves the
    /// default shop only.
    pub shops: Option<ShopCache>,
    /// Cartpanda's API, for shops that verify orders.
    pub orders: Option<Arc<dyn OrderSource>>,
}

/// How long a delivery may take when the runtime gives no deadline (tests, local runs).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(15);

impl Bridge {
    /// The ledger, tracker and clock, for one send.
    pub fn courier(&self) -> Courier<'_> {
        Courier {
            ledger: self.ledger.as_ref(),
            tracker: self.tracker.as_ref(),
            clock: self.clock.as_ref(),
            ttl_days: self.config.ttl_days,
        }
    }

    /// The profile of a named shop (cached); `None` when there is no such shop.
    pub async fn shop_profile(&self, name: &str) -> Result<Option<Arc<Profile>>, LedgerError> {
        match &self.shops {
            Some(cache) => cache.profile(name, self.clock.as_ref()).await,
            None => Ok(None),
        }
    }
}
