//! When to try again: exponential backoff with a cap and jitter.

/// Backoff of failed attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure, ms, unless the transaction sets
    /// `retry_interval`.
    pub base_ms: u64,
    /// Longest delay, ms.
    pub max_ms: u64,
    /// Relative jitter: the delay is scaled by a factor in `[1 - j, 1 + j]`.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The base interval of one transaction: its `retry_interval` (s) when
    /// set, else the configured base.
    pub fn base_for(&self, retry_interval_s: i64) -> u64 {
        if retry_interval_s > 0 {
            (retry_interval_s as u64).saturating_mul(1000)
        } else {
            self.base_ms
        }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` consecutive
    /// failures (1 = the first). `rand01` is a uniform sample in `[0, 1)`.
    pub fn delay_ms(&self, retry_interval_s: i64, attempt: u32, rand01: f64) -> u64 {
        let base = self.base_for(retry_interval_s);
        let exp = attempt.saturating_sub(1).min(32);
        let raw = base.saturating_mul(1u64 << exp);
        let capped = raw.min(self.max_ms.max(base));
        let factor = 1.0 + self.jitter * (2.0 * rand01 - 1.0);
        ((capped as f64) * factor).round().max(1.0) as u64
    }
}

/// The defaults the planner needs from configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Backoff of failed attempts.
    pub retry: RetryPolicy,
    /// Default age (s) after which a prepared msg, tcc or xa times out.
    pub timeout_to_fail_s: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        base_ms: 1000,
        max_ms: 60_000,
        jitter: 0.0,
    };

    #[test]
    fn doubles_from_base_and_stops_at_cap() {
        let got: Vec<u64> = (1..=9).map(|a| P.delay_ms(0, a, 0.5)).collect();
        assert_eq!(
            got,
            [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        assert_eq!(P.delay_ms(0, 1000, 0.5), 60_000);
    }

    #[test]
    fn transaction_interval_replaces_base() {
        assert_eq!(P.delay_ms(15, 1, 0.5), 15_000);
        assert_eq!(P.delay_ms(15, 2, 0.5), 30_000);
        // a base above the cap is still honoured once
        assert_eq!(P.delay_ms(100, 3, 0.5), 100_000);
    }

    #[test]
    fn jitter_stays_in_band() {
        let p = RetryPolicy { jitter: 0.2, ..P };
        assert_eq!(p.delay_ms(0, 1, 0.0), 800);
        assert_eq!(p.delay_ms(0, 1, 0.999_999), 1200);
        assert_eq!(p.delay_ms(0, 1, 0.5), 1000);
    }
}
