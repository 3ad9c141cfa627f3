//! The conversion itself: every tensor of a [`TensorSource`] read as f32 and
//! stored as the type its [`Mix`] gives it, metadata carried over, and the
//! result written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use smelt_gguf::{GgufWriter, Value};
use smelt_tensor::{DType, quantize};

use crate::ConvertError;
use crate::mix::{Mix, PositionCounter, layer_of, tensor_type};
use crate::source::{GgufSource, TensorSource};

/// Values quantized per piece: bounds memory (16 MiB of f32) and how long a
/// cancel or a progress update waits.
const PIECE_ELEMS: u64 = 1 << 22;

/// Where a conversion is, for progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// The tensor being converted (or the last one, while writing).
    pub tensor: &'a str,
    /// Its index and the number of tensors.
    pub index: usize,
    pub n_tensors: usize,
    /// Values converted so far, of `total` in the whole model.
    pub done: u64,
    pub total: u64,
    /// All tensors are converted and the file is being written.
    pub writing: bool,
}

/// How to convert.
pub struct Options<'a> {
    pub mix: Mix,
    /// Set (e.g. from a Ctrl-C handler) to stop at the next piece; the
    /// conversion then fails with [`ConvertError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Called after each piece of work.
    pub progress: Option<&'a mut dyn FnMut(Progress<'_>)>,
}

impl<'a> Options<'a> {
    /// Plain options: this mix, no cancel flag, no progress.
    pub fn new(mix: Mix) -> Options<'a> {
        Options {
            mix,
            cancel: None,
            progress: None,
        }
    }
}

/// What a conversion produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Each tensor's name and stored type, in file order.
    pub tensors: Vec<(String, DType)>,
    /// Bytes of tensor data written.
    pub data_bytes: u64,
    /// Total values in all tensors.
    pub n_elements: u64,
}

/// Number of layers: `<arch>.block_count`, else one past the largest `blk.N`.
fn n_layers(source: &dyn TensorSource) -> usize {
    let meta = source.metadata();
    let get = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let from_meta = get("general.architecture")
        .and_then(Value::as_str)
        .and_then(|arch| get(&format!("{arch}.block_count")))
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok());
    from_meta.unwrap_or_else(|| {
        source
            .tensors()
            .iter()
            .filter_map(|t| layer_of(&t.name))
            .max()
            .map_or(0, |n| n + 1)
    })
}

/// Converts every tensor of `source` into a [`GgufWriter`] holding the new
/// file: all metadata of the source, `general.file_type` set for the mix.
pub fn convert(
    source: &dyn TensorSource,
    options: &mut Options<'_>,
) -> Result<(GgufWriter, Summary), ConvertError> {
    let mix = options.mix;
    let mut writer = GgufWriter::new();
    for (key, value) in source.metadata() {
        writer.set(key.clone(), value.clone());
    }
    writer.set("general.file_type", Value::U32(mix.file_type()));

    let tensors = source.tensors();
    let n_layers = n_layers(source);
    let total: u64 = tensors.iter().map(|t| t.row_len() * t.n_rows()).sum();
    let mut positions = PositionCounter::default();
    let mut summary = Summary {
        tensors: Vec::with_capacity(tensors.len()),
        data_bytes: 0,
        n_elements: total,
    };
    let mut done = 0u64;
    let mut values = Vec::new();
    for (index, t) in tensors.iter().enumerate() {
        let target = tensor_type(mix, &t.name, &t.dims, positions.next(&t.name), n_layers);
        let (row_len, n_rows) = (t.row_len(), t.n_rows());
        let too_large = || ConvertError::TooLarge {
            tensor: t.name.clone(),
            n_rows,
            row_len,
        };
        let data = if let Some(raw) = source.raw_bytes(index, target) {
            done += row_len * n_rows;
            raw.to_vec()
        } else {
            let row_len_usize = usize::try_from(row_len).map_err(|_| too_large())?;
            let row_bytes = target
                .row_bytes(row_len)
                .ok()
                .and_then(|b| b.checked_mul(n_rows))
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(too_large)?;
            let mut data = Vec::with_capacity(row_bytes);
            let rows_per_piece = (PIECE_ELEMS / row_len.max(1)).max(1);
            let mut row = 0;
            while row < n_rows {
                if options.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(ConvertError::Cancelled);
                }
                let end = (row + rows_per_piece).min(n_rows);
                values.clear();
                source.read_rows(index, row..end, &mut values)?;
                let piece = quantize(target, &values, row_len_usize).map_err(|e| {
                    ConvertError::Quantize {
                        tensor: t.name.clone(),
                        target,
                        source: e.offset_rows(row as usize),
                    }
                })?;
                data.extend_from_slice(&piece);
                done += (end - row) * row_len;
                row = end;
                report(options, &t.name, index, tensors.len(), done, total, false);
            }
            data
        };
        summary.data_bytes += data.len() as u64;
        writer
            .add_tensor(t.name.clone(), t.dims.clone(), target, data)
            .map_err(ConvertError::Build)?;
        summary.tensors.push((t.name.clone(), target));
        report(options, &t.name, index, tensors.len(), done, total, false);
    }
    if summary.tensors.iter().any(|(_, t)| t.is_quantized())
        && !source
            .metadata()
            .iter()
            .any(|(k, _)| k == "general.quantization_version")
    {
        writer.set("general.quantization_version", Value::U32(2));
    }
    Ok((writer, summary))
}

fn report(
    options: &mut Options<'_>,
    tensor: &str,
    index: usize,
    n_tensors: usize,
    done: u64,
    total: u64,
    writing: bool,
) {
    if let Some(progress) = options.progress.as_mut() {
        progress(Progress {
            tensor,
            index,
            n_tensors,
            done,
            total,
            writing,
        });
    }
}

/// A file that is removed when dropped unless [`TempFile::keep`] was called.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `OUT.tmp-<pid>`, next to `out` (same file system, so the rename is atomic).
pub fn temp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    out.with_file_name(name)
}

/// Converts `source` and writes it to `out` atomically: the file is built
/// as `OUT.tmp-<pid>` in the same directory, synced, then renamed to `out`.
/// On any error (or cancel) the temporary file is removed and `out` is
/// untouched.
pub fn convert_to_file(
    source: &dyn TensorSource,
    out: &Path,
    options: &mut Options<'_>,
) -> Result<Summary, ConvertError> {
    let tmp = temp_path(out);
    let write_err = |source| ConvertError::Write {
        path: out.to_path_buf(),
        source,
    };
    // Created first, so an unwritable destination fails before the work.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(write_err)?;
    let guard = TempFile {
        path: tmp.clone(),
        armed: true,
    };
    let (writer, summary) = convert(source, options)?;
    let last = summary.tensors.last().map_or("", |(n, _)| n.as_str());
    let n = summary.tensors.len();
    report(
        options,
        last,
        n.saturating_sub(1),
        n,
        summary.n_elements,
        summary.n_elements,
        true,
    );
    let mut buffered = BufWriter::with_capacity(1 << 20, file);
    writer
        .write_to(&mut buffered)
        .map_err(ConvertError::Build)?;
    let file = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    if options.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(ConvertError::Cancelled);
    }
    fs::rename(&tmp, out).map_err(write_err)?;
    guard.keep();
    // Make the rename itself durable (best effort: not every platform can
    // open a directory).
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(summary)
}

/// `smelt quantize IN OUT`: reads a GGUF file, converts it with `options`,
/// writes `out` atomically.
pub fn quantize_file(
    input: &Path,
    out: &Path,
    options: &mut Options<'_>,
) -> Result<Summary, ConvertError> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(input), fs::canonicalize(out))
        && a == b
    {
        return Err(ConvertError::OutputIsInput(out.to_path_buf()));
    }
    let source = GgufSource::open(input)?;
    convert_to_file(&source, out, options)
}
