//! Recycling: a worker that has served `--max-calls-per-worker` calls, or
//! whose resident memory has reached `--max-worker-rss-bytes`, is replaced
//! after the call that got it there, before it takes another.

/// When a worker is due for replacement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recycle {
    pub max_calls: Option<u64>,
    pub max_rss_bytes: Option<u64>,
}

impl Recycle {
    /// Whether worker process `pid`, which has served `calls` calls, is due.
    pub fn due(&self, calls: u64, pid: u32) -> bool {
        self.max_calls.is_some_and(|max| calls >= max)
            || self
                .max_rss_bytes
                .is_some_and(|max| resident_bytes(pid).is_some_and(|rss| rss >= max))
    }
}

/// The resident set of process `pid` (shared pages included), from
/// `/proc/<pid>/statm`; `None` if it cannot be read.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_up_to_the_bound() {
        let recycle = Recycle {
            max_calls: Some(3),
            max_rss_bytes: None,
        };
        assert!(!recycle.due(2, std::process::id()));
        assert!(recycle.due(3, std::process::id()));
        assert!(!Recycle::default().due(u64::MAX, std::process::id()));
    }

    #[test]
    fn resident_memory_is_read_from_proc() {
        let mine = resident_bytes(std::process::id()).expect("our own statm");
        assert!(mine > 1 << 20, "{mine}");
        let recycle = |max| Recycle {
            max_calls: None,
            max_rss_bytes: Some(max),
        };
        assert!(recycle(mine / 2).due(0, std::process::id()));
        assert!(!recycle(u64::MAX).due(0, std::process::id()));
        assert_eq!(resident_bytes(u32::MAX), None);
    }
}
