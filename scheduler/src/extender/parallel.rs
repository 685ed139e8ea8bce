//! Evaluating many nodes on several cores. A verb's nodes are independent (each reads its
//! own memo), so a large cluster's list is cut into one contiguous chunk per core and the
//! results put back in order. Small lists stay on the calling thread: starting threads costs
//! more than scoring a few hundred memoised nodes.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

/// Below this many nodes a verb runs on the calling thread.
const MIN_PARALLEL: usize = 1024;

/// Most threads one verb uses.
const MAX_THREADS: usize = 8;

/// `items.iter().map(f)`, in order, spread over the machine's cores when `items` is long.
pub fn map<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if items.len() < MIN_PARALLEL {
        return items.iter().map(f).collect();
    }
    let threads = threads();
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                // A panicking evaluation takes the verb down, as it would on one thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// Threads a verb may use: the cores this process may run on (asked once: the answer reads
/// cgroup files), at most [`MAX_THREADS`].
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_THREADS)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_order_of_long_and_short_lists() {
        for n in [0, 3, super::MIN_PARALLEL - 1, super::MIN_PARALLEL, 5000] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::map(&items, |i| i * 2);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
