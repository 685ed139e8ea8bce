//! Summary statistics over seeds: the mean and the half-width of its 95%
//! confidence interval (Student's t, since there are few seeds).

/// Mean and 95% confidence half-width of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Sample mean (NaN for an empty sample).
    pub mean: f64,
    /// Half-width of the 95% confidence interval of the mean (0 for one value).
    pub ci95: f64,
    /// Values the estimate is made of.
    pub n: usize,
}

impl Estimate {
    /// The estimate of `values`, NaN values left out (a metric a run could not measure).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Estimate {
        let values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
        let n = values.len();
        if n == 0 {
            return Estimate {
                mean: f64::NAN,
                ci95: 0.0,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Estimate { mean, ci95: 0.0, n };
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Estimate {
            mean,
            ci95: t_975(n - 1) * (var / n as f64).sqrt(),
            n,
        }
    }

    /// Whether the two intervals overlap: the difference is within noise.
    pub fn overlaps(&self, other: &Estimate) -> bool {
        (self.mean - other.mean).abs() <= self.ci95 + other.ci95
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom.
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.0,
        _ => 1.96,
    }
}

/// The `q`-quantile (0..=1) of `sorted` by the nearest-rank rule; NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_seeds_use_t_with_nine_degrees_of_freedom() {
        let e = Estimate::of((1..=10).map(f64::from));
        assert_eq!(e.n, 10);
        assert!((e.mean - 5.5).abs() < 1e-12);
        // sd = 3.0277, se = 0.9574, t(9) = 2.262.
        assert!((e.ci95 - 2.262 * 0.957_427).abs() < 1e-4, "{e:?}");
        assert_eq!(Estimate::of([2.0]).ci95, 0.0);
        assert!(Estimate::of([]).mean.is_nan());
        assert_eq!(Estimate::of([1.0, f64::NAN, 3.0]).n, 2);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
