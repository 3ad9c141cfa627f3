//! The machine a benchmark ran on: CPU model, instruction-set extensions the
//! kernels may use, load average, and this process's peak memory.

/// What `smelt bench` reports about the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemInfo {
    /// `/proc/cpuinfo` "model name" (or "unknown").
    pub cpu: String,
    /// Logical CPUs this process may run on.
    pub logical_cpus: usize,
    /// Physical cores (the CPU backend's default thread count).
    pub physical_cores: usize,
    /// Instruction-set extensions detected at run time.
    pub isa: Vec<&'static str>,
}

impl SystemInfo {
    pub fn detect() -> SystemInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        SystemInfo {
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_string()),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            physical_cores: smelt_cpu::physical_cores(),
            isa: isa_features(),
        }
    }
}

/// The first "model name" line of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// SIMD and related extensions the CPU reports, as the kernels would detect them.
#[cfg(target_arch = "x86_64")]
pub fn isa_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($name) {
                f.push($name);
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi2",
        "avxvnni",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16"
    );
    f
}

/// SIMD and related extensions the CPU reports, as the kernels would detect them.
#[cfg(target_arch = "aarch64")]
pub fn isa_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($name) {
                f.push($name);
            }
        )*};
    }
    probe!("neon", "dotprod", "fp16", "i8mm", "sve");
    f
}

/// SIMD and related extensions the CPU reports (none probed on this architecture).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn isa_features() -> Vec<&'static str> {
    Vec::new()
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// This process's peak resident set size in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&status, "VmHWM").map(|kib| kib * 1024)
}

/// A `Key:   1234 kB` value of a `/proc/self/status` text, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k != key {
            return None;
        }
        v.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_texts() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t: fpu\n\
                       processor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 9R14"));
        assert_eq!(cpu_model("processor: 0\n"), None);
        let status = "Name:\tsmelt\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }
}
