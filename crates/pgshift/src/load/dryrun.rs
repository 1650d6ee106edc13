//! A load that changes nothing: the loader's own code run against a warehouse that records every transaction
//! ([`DryRunWarehouse`]) and stages that keep every write in memory ([`OverlayStages`]), so the statements shown are
//! exactly those a load would send, in order, one list a transaction. Reads of the warehouse answer "absent" unless
//! the dry run assumes a target's columns.

use std::sync::Arc;

use crate::contract::load::LoadRequest;
use crate::stage::overlay::OverlayStages;
use crate::stage::StageOpener;
use crate::warehouse::dryrun::{DryRunWarehouse, Transaction};

use super::context::LoadContext;
use super::error::LoadError;

/// The transactions a load of `req` would submit to `wh`'s warehouse, nothing written anywhere.
pub async fn dry_run(
    stages: Arc<dyn StageOpener>,
    wh: Arc<DryRunWarehouse>,
    req: LoadRequest,
) -> Result<Vec<Transaction>, LoadError> {
    let ctx = LoadContext::new(Arc::new(OverlayStages::new(stages)), wh.clone());
    super::start::load(&ctx, req).await?;
    Ok(wh.transactions())
}
