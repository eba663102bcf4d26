//! `steps`: needs the step-job client (steps branch); filled in once it is merged.

use std::path::Path;

use crate::peers::Peers;
use crate::report::Report;
use crate::{BenchResult, Config};

pub(crate) async fn run(
    _cfg: &Config,
    _dir: &Path,
    _report: &mut Report,
    _peers: &mut Peers,
) -> BenchResult {
    Err("step jobs are not in this build yet".into())
}
