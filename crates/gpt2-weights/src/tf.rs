//! OpenAI TensorFlow checkpoints (work in progress).
use crate::{Weights, WeightsError};
use std::path::Path;
pub(crate) fn open(dir: &Path) -> Result<Weights, WeightsError> {
    Err(WeightsError::Unsupported {
        file: dir.display().to_string(),
        message: "TF checkpoints: not yet".into(),
    })
}
