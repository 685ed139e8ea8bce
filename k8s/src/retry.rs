//! How fast the extender and the agent retry a broken API watch.
//!
//! kube-runtime's default grows to 30 s. After an API server outage that is too slow for both:
//! the agent's Allocate waits at most 15 s for a pod its cache has not seen, and an extender
//! that does not yet know a node fails pods there, which kube-scheduler then parks for 60 s or
//! more. One watch per process at this rate is a small load next to the kubelets' own retries.

use std::time::Duration;

/// The longest retry delay [`watch_backoff`] gives, jitter included.
pub const WATCH_RETRY_MAX: Duration = Duration::from_secs(8);

/// 0.5 s doubling to at most 4 s, plus up to as much again in jitter, never giving up.
pub fn watch_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(WATCH_RETRY_MAX / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder as _;

    use super::*;

    #[test]
    fn retries_start_fast_stay_bounded_and_never_stop() {
        let delays: Vec<Duration> = watch_backoff().build().take(200).collect();
        assert_eq!(delays.len(), 200, "never gives up");
        assert!(delays[0] <= Duration::from_secs(1), "{:?}", delays[0]);
        let longest = delays.iter().max().copied().unwrap_or_default();
        assert!(longest <= WATCH_RETRY_MAX, "longest retry {longest:?}");
        assert!(
            longest >= Duration::from_secs(4),
            "it does grow: {longest:?}"
        );
    }
}
