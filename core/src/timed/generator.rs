//! Built-in timed workloads, seeded: a job mix drawn with an arrival process
//! sized to an offered load of the cluster's compute.
//!
//! - `poisson`: exponential gaps between arrivals;
//! - `bursts`: arrivals in bursts (a geometric number of jobs, mean 20, within a
//!   few seconds), the bursts themselves Poisson;
//! - `skewed`: Poisson, with the mix reweighted towards the small profiles
//!   (weight / compute share²);
//! - `adversarial`: Poisson, alternating one small job (at most 2/7 of a GPU) and
//!   one large one (at least 3/7), each drawn from its half of the mix;
//! - `saturated`: the cluster is prefilled at time 0 with jobs worth its whole
//!   compute, then Poisson at 1.5× the offered load keeps a queue.
//!
//! Run times are log-normal (σ = 1) around the given mean.

use super::job::{Job, Length};
use crate::request::PodRequest;
use crate::rng::SplitMix64;

/// Jobs of one burst arrive within this long of its start.
const BURST_SPREAD_MS: usize = 5_000;

/// The arrival model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Exponential gaps.
    Poisson,
    /// Bursts of jobs, the bursts Poisson.
    Bursts,
    /// Poisson, small profiles favoured.
    Skewed,
    /// Poisson, small and large jobs alternating.
    Adversarial,
    /// Prefill to full, then 1.5× the load.
    Saturated,
}

impl Arrivals {
    /// Every model, by its name.
    pub const ALL: [(&'static str, Arrivals); 5] = [
        ("poisson", Arrivals::Poisson),
        ("bursts", Arrivals::Bursts),
        ("skewed", Arrivals::Skewed),
        ("adversarial", Arrivals::Adversarial),
        ("saturated", Arrivals::Saturated),
    ];

    /// The model's name.
    pub fn name(self) -> &'static str {
        Arrivals::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("poisson", |(n, _)| n)
    }
}

/// One kind of job in the mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixEntry {
    /// What the job asks for.
    pub request: PodRequest,
    /// Compute it holds, in whole GPUs (a 3g of 7 slices is 3/7).
    pub share: f64,
    /// Relative frequency.
    pub weight: f64,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Generator {
    /// The arrival model.
    pub arrivals: Arrivals,
    /// Number of jobs.
    pub jobs: usize,
    /// Offered load: the compute the arriving jobs ask for per unit of time, as a share of
    /// the cluster's (1.0 keeps it exactly busy on average).
    pub load: f64,
    /// Mean run time, milliseconds.
    pub mean_runtime_ms: f64,
    /// GPU compute of the cluster, in whole GPUs.
    pub capacity_gpus: f64,
    /// The job mix.
    pub mix: Vec<MixEntry>,
    /// Seed.
    pub seed: u64,
}

impl Generator {
    /// The jobs, sorted by arrival.
    pub fn generate(&self) -> Vec<Job> {
        let mix = self.weighted_mix();
        let mut rng = SplitMix64::new(self.seed ^ 0x6a6f_6273);
        let total: f64 = mix.iter().map(|m| m.weight).sum();
        let mean_share = if total > 0.0 {
            mix.iter().map(|m| m.weight * m.share).sum::<f64>() / total
        } else {
            0.0
        };
        let load = match self.arrivals {
            Arrivals::Saturated => 1.5 * self.load,
            _ => self.load,
        };
        // Jobs per millisecond such that rate × runtime × share = load × capacity.
        let rate = if mean_share > 0.0 && self.mean_runtime_ms > 0.0 {
            load * self.capacity_gpus / (self.mean_runtime_ms * mean_share)
        } else {
            1.0 / self.mean_runtime_ms.max(1.0)
        };
        let small: Vec<MixEntry> = mix
            .iter()
            .filter(|m| m.share <= 2.0 / 7.0 + 1e-9)
            .cloned()
            .collect();
        let large: Vec<MixEntry> = mix
            .iter()
            .filter(|m| m.share > 2.0 / 7.0 + 1e-9)
            .cloned()
            .collect();
        let mut jobs = Vec::with_capacity(self.jobs);
        let mut t = 0.0f64;
        let mut prefill = 0.0f64;
        let mut burst_left = 0usize;
        for k in 0..self.jobs {
            let pool: &[MixEntry] =
                match self.arrivals {
                    Arrivals::Adversarial if !small.is_empty() && !large.is_empty() => {
                        if k % 2 == 0 { &small } else { &large }
                    }
                    _ => &mix,
                };
            let Some(entry) = draw(pool, &mut rng) else {
                break;
            };
            let arrival = match self.arrivals {
                Arrivals::Saturated if prefill < self.capacity_gpus => {
                    prefill += entry.share.max(0.05);
                    0.0
                }
                Arrivals::Bursts => {
                    if burst_left == 0 {
                        // Bursts of mean 20 jobs: burst rate is the job rate / 20.
                        t += exponential(&mut rng, 20.0 / rate);
                        burst_left = 1 + geometric(&mut rng, 1.0 / 20.0);
                    }
                    burst_left -= 1;
                    // Spread over the burst's first seconds without moving the clock.
                    t + rng.below(BURST_SPREAD_MS) as f64
                }
                _ => {
                    t += exponential(&mut rng, 1.0 / rate);
                    t
                }
            };
            let runtime = lognormal(&mut rng, self.mean_runtime_ms, 1.0).max(1000.0);
            jobs.push(Job {
                id: format!("{}-{k}", self.arrivals.name()),
                arrival_ms: arrival as u64,
                length: Length::Duration { ms: runtime as u64 },
                request: entry.request.clone(),
            });
        }
        jobs.sort_by_key(|j| j.arrival_ms);
        jobs
    }

    fn weighted_mix(&self) -> Vec<MixEntry> {
        match self.arrivals {
            Arrivals::Skewed => self
                .mix
                .iter()
                .map(|m| MixEntry {
                    weight: m.weight / (m.share.max(1.0 / 7.0)).powi(2),
                    ..m.clone()
                })
                .collect(),
            _ => self.mix.clone(),
        }
    }
}

fn draw<'m>(mix: &'m [MixEntry], rng: &mut SplitMix64) -> Option<&'m MixEntry> {
    let total: f64 = mix.iter().map(|m| m.weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = uniform(rng) * total;
    for m in mix {
        if x < m.weight {
            return Some(m);
        }
        x -= m.weight;
    }
    mix.last()
}

/// Uniform in (0, 1).
fn uniform(rng: &mut SplitMix64) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn exponential(rng: &mut SplitMix64, mean: f64) -> f64 {
    -mean * uniform(rng).ln()
}

/// Failures before the first success, success probability `p`.
fn geometric(rng: &mut SplitMix64, p: f64) -> usize {
    (uniform(rng).ln() / (1.0 - p).ln()).floor().min(10_000.0) as usize
}

/// Log-normal with the given mean and shape σ.
fn lognormal(rng: &mut SplitMix64, mean: f64, sigma: f64) -> f64 {
    let normal = (-2.0 * uniform(rng).ln()).sqrt() * (std::f64::consts::TAU * uniform(rng)).cos();
    let mu = mean.max(1.0).ln() - sigma * sigma / 2.0;
    (mu + sigma * normal).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::GpuDemand;

    fn mix() -> Vec<MixEntry> {
        let mig = |p: &str, share: f64, weight: f64| MixEntry {
            request: PodRequest::cpu_only(1000, 1024).with_gpu(GpuDemand::Mig {
                profile: p.into(),
                count: 1,
            }),
            share,
            weight,
        };
        vec![
            mig("1g.10gb", 1.0 / 7.0, 3.0),
            mig("3g.40gb", 3.0 / 7.0, 1.0),
            mig("7g.80gb", 1.0, 1.0),
        ]
    }

    fn generator(arrivals: Arrivals) -> Generator {
        Generator {
            arrivals,
            jobs: 4000,
            load: 0.9,
            mean_runtime_ms: 600_000.0,
            capacity_gpus: 64.0,
            mix: mix(),
            seed: 7,
        }
    }

    /// Compute asked per ms over the arrival span, as a share of the capacity.
    fn offered(jobs: &[Job], g: &Generator) -> f64 {
        let span = jobs.last().unwrap().arrival_ms - jobs.first().unwrap().arrival_ms;
        let share = |j: &Job| {
            g.mix
                .iter()
                .find(|m| m.request == j.request)
                .map_or(0.0, |m| m.share)
        };
        let work: f64 = jobs
            .iter()
            .map(|j| match j.length {
                Length::Duration { ms } => ms as f64 * share(j),
                Length::Work { ms } => ms as f64,
            })
            .sum();
        work / span as f64 / g.capacity_gpus
    }

    #[test]
    fn poisson_offers_the_load_asked_for_and_is_seeded() {
        let g = generator(Arrivals::Poisson);
        let jobs = g.generate();
        assert_eq!(jobs.len(), 4000);
        assert_eq!(jobs, g.generate());
        assert!(jobs.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
        let load = offered(&jobs, &g);
        assert!((0.75..1.05).contains(&load), "{load}");
    }

    #[test]
    fn adversarial_alternates_small_and_large() {
        let jobs = generator(Arrivals::Adversarial).generate();
        let small = jobs
            .iter()
            .filter(|j| matches!(&j.request.gpu, GpuDemand::Mig { profile, .. } if profile == "1g.10gb"))
            .count();
        // Half small exactly (the mix's only small profile), before sorting by time.
        assert_eq!(small, 2000);
    }

    #[test]
    fn saturated_prefills_the_cluster_at_time_zero() {
        let jobs = generator(Arrivals::Saturated).generate();
        let at_zero = jobs.iter().filter(|j| j.arrival_ms == 0).count();
        assert!(at_zero >= 64, "{at_zero}");
        let skewed = generator(Arrivals::Skewed).generate();
        let small = |jobs: &[Job]| {
            jobs.iter()
                .filter(|j| matches!(&j.request.gpu, GpuDemand::Mig { profile, .. } if profile == "1g.10gb"))
                .count()
        };
        assert!(small(&skewed) > small(&generator(Arrivals::Poisson).generate()));
    }

    #[test]
    fn bursts_arrive_together() {
        // A large cluster: bursts come faster than one burst's spread.
        let g = Generator {
            capacity_gpus: 2000.0,
            ..generator(Arrivals::Bursts)
        };
        let jobs = g.generate();
        let load = offered(&jobs, &g);
        assert!((0.7..1.2).contains(&load), "{load}");
        let close = jobs
            .windows(2)
            .filter(|w| w[1].arrival_ms - w[0].arrival_ms < 1_000)
            .count();
        assert!(close > jobs.len() / 2, "{close}");
    }
}
