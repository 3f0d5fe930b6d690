//! Writing Hugging Face directories (work in progress).
use crate::{Config, Dtype, TensorView, WeightsError};
use std::path::Path;
/// Writes an HF directory (not yet implemented).
pub fn save_hf(
    to: &Path,
    _config: &Config,
    _tensors: &[(String, TensorView<'_>)],
) -> Result<(), WeightsError> {
    Err(WeightsError::DestinationExists(to.to_path_buf()))
}
/// Writes an HF directory with extra files (not yet implemented).
pub fn save_hf_with_files(
    to: &Path,
    _config: &Config,
    _tensors: &[(String, TensorView<'_>)],
    _files: &[(std::path::PathBuf, String)],
) -> Result<(), WeightsError> {
    Err(WeightsError::DestinationExists(to.to_path_buf()))
}
/// Converts (not yet implemented).
pub fn convert(_from: &Path, to: &Path, _dtype: Dtype) -> Result<(), WeightsError> {
    Err(WeightsError::DestinationExists(to.to_path_buf()))
}
