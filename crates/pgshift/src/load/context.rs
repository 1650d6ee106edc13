//! What the loader works with: its ports, and who watches the load.

use std::sync::Arc;

use crate::contract::load::LoadWatch;
use crate::stage::{run, Stage, StageOpener};
use crate::warehouse::Warehouse;

use super::error::LoadError;

/// The loader's ports, and who watches the load (none in a Lambda).
pub struct LoadContext {
    pub stages: Arc<dyn StageOpener>,
    pub warehouse: Arc<dyn Warehouse>,
    pub watch: Option<Arc<dyn LoadWatch>>,
    /// How long one `start` or `check` may go on setting tables up before it hands the rest to the next check (a
    /// Lambda's timeout bounds each invocation; at least one table is set up each time). `None`: no bound.
    pub budget: Option<std::time::Duration>,
}

impl LoadContext {
    pub fn new(stages: Arc<dyn StageOpener>, warehouse: Arc<dyn Warehouse>) -> Self {
        Self {
            stages,
            warehouse,
            watch: None,
            budget: None,
        }
    }
}

pub(super) async fn stage_of(ctx: &LoadContext, plan_url: &str) -> Result<Arc<dyn Stage>, LoadError> {
    Ok(run::stage_of(ctx.stages.as_ref(), plan_url).await?)
}
