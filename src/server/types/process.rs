//! The standard `process_*` metrics every Prometheus client library exports, read from
//! `/proc` (Linux): CPU time, memory, file descriptors, start time.

// Only a metrics page reads them, which simulation builds never render.
#![cfg_attr(madsim, allow(dead_code))]

/// The standard `process_*` metrics of a Prometheus client.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) cpu_seconds: f64,
    pub(crate) resident_memory_bytes: u64,
    pub(crate) virtual_memory_bytes: u64,
    pub(crate) open_fds: u64,
    pub(crate) max_fds: Option<u64>,
    pub(crate) start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads this process' numbers from `/proc` (Linux); `None` elsewhere or when `/proc`
    /// is not mounted.
    pub(crate) fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        ProcessStats::parse(&stat, &status, &boot, &limits, open_fds)
    }

    /// The numbers from the text of `/proc/self/stat`, `/proc/self/status`, `/proc/stat`
    /// and `/proc/self/limits`.
    fn parse(
        stat: &str,
        status: &str,
        boot: &str,
        limits: &str,
        open_fds: u64,
    ) -> Option<ProcessStats> {
        // Clock ticks per second as `/proc` reports times: USER_HZ, 100 on every Linux
        // architecture (the Go client assumes the same).
        const TICKS_PER_SECOND: f64 = 100.0;
        // The command name (field 2) is in parentheses and may hold spaces; the fields
        // counted from 3 start after its closing parenthesis.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) and 22 (starttime), numbered from 1 as in proc(5).
        let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
        let cpu_ticks = field(14)? + field(15)?;
        let start_ticks = field(22)?;
        let boot_time: f64 = boot
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let kilobytes = |key: &str| -> Option<u64> {
            let line = status.lines().find(|line| line.starts_with(key))?;
            let number = line[key.len()..].split_whitespace().next()?;
            number.parse::<u64>().ok().map(|kb| kb * 1024)
        };
        let max_fds = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line["Max open files".len()..].split_whitespace().next())
            .and_then(|soft| soft.parse().ok());
        Some(ProcessStats {
            cpu_seconds: cpu_ticks / TICKS_PER_SECOND,
            resident_memory_bytes: kilobytes("VmRSS:").unwrap_or(0),
            virtual_memory_bytes: kilobytes("VmSize:").unwrap_or(0),
            open_fds,
            max_fds,
            start_time_seconds: boot_time + start_ticks / TICKS_PER_SECOND,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_numbers_parse_from_proc_text() {
        let stat = "4242 (ox cd) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 9 0 12345 1000 200 0";
        let status = "Name:\toxcd\nVmSize:\t  2048 kB\nVmRSS:\t   512 kB\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 7\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let stats = ProcessStats::parse(stat, status, boot, limits, 17).expect("parses");
        assert_eq!(
            stats,
            ProcessStats {
                cpu_seconds: 4.0,
                resident_memory_bytes: 512 * 1024,
                virtual_memory_bytes: 2048 * 1024,
                open_fds: 17,
                max_fds: Some(1024),
                start_time_seconds: 1_700_000_000.0 + 123.45,
            }
        );
        assert_eq!(
            ProcessStats::parse("garbage", status, boot, limits, 1),
            None
        );
    }
}
