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

/// CPU time counters of the whole machine and of this process, to tell how
/// much of the machine other processes took while a test ran (the benchmark
/// machine is often shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Non-idle time of every CPU (steal included), in clock ticks.
    busy: u64,
    /// All time of every CPU, in clock ticks.
    total: u64,
    /// This process's user + system time, in clock ticks.
    own: u64,
    /// CPUs counted in `/proc/stat`.
    cpus: usize,
}

impl CpuTimes {
    /// The counters now, or None where `/proc` cannot tell.
    pub fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        CpuTimes::parse(&stat, &own)
    }

    /// From the texts of `/proc/stat` and `/proc/self/stat`.
    pub fn parse(stat: &str, self_stat: &str) -> Option<CpuTimes> {
        let mut lines = stat.lines();
        let all: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user and nice).
        let field = |i: usize| all.get(i).copied().unwrap_or(0);
        let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        let total = busy + field(3) + field(4);
        let cpus = lines
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
            .max(1);
        // Fields after the parenthesised command: state is the first, utime the 12th.
        let rest = self_stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(CpuTimes {
            busy,
            total,
            own,
            cpus,
        })
    }

    /// CPUs' worth of time other processes (and the hypervisor) took since
    /// `earlier`: 0 on a quiet machine, 1.0 when one other core-hog ran.
    pub fn others_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        if total == 0 {
            return None;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        Some(busy.saturating_sub(own) as f64 / total as f64 * self.cpus as f64)
    }
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

    #[test]
    fn other_processes_cpu_share() {
        let self_stat = |utime: u64, stime: u64| {
            format!(
                "42 (smelt bench) R 1 42 42 0 -1 4194304 900 0 0 0 {utime} {stime} 0 0 20 0 3 0"
            )
        };
        let stat = |user: u64, idle: u64, steal: u64| {
            format!(
                "cpu  {user} 0 10 {idle} 0 0 0 {steal} 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\nintr 5\n"
            )
        };
        let a = CpuTimes::parse(&stat(1000, 5000, 0), &self_stat(300, 20)).unwrap();
        assert_eq!(a.cpus, 2);
        // 200 ticks pass on 2 CPUs (400 in all): 300 busy, of which this
        // process used 150 and a neighbour (or steal) the other 150.
        let b = CpuTimes::parse(&stat(1250, 5100, 50), &self_stat(420, 50)).unwrap();
        let others = b.others_since(&a).unwrap();
        assert!((others - 150.0 / 400.0 * 2.0).abs() < 1e-12, "{others}");
        assert_eq!(a.others_since(&a), None);
        assert!(CpuTimes::parse("intr 5\n", &self_stat(1, 1)).is_none());
    }
}
