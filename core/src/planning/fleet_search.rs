//! The cheapest fleet that meets a target: node counts per node type, each type with an
//! hourly price and a most-nodes bound, judged by an evaluator the caller supplies (a
//! timed replay, in the planner).
//!
//! The search assumes what capacity planning assumes: adding a node never makes the target
//! harder to meet. Then the cheapest fleet is a minimal one (no node can be taken away),
//! and the minimal fleets form a staircase: with one more node of the first type, the
//! fewest nodes of the last type needed never grows. The search walks that staircase,
//! so two types cost about as many evaluations as their two bounds added, not multiplied;
//! [`exhaustive`] tries every fleet, to check it on small cases.

use std::collections::HashMap;

/// One kind of node a fleet can be made of.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedType {
    /// Name, for the output.
    pub name: String,
    /// Price of one node per hour (any currency, the same for every type); above 0.
    pub price_per_hour: f64,
    /// Most nodes of this type a fleet may have.
    pub max_nodes: u32,
}

/// What the evaluator said of one fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The target metric (lower is better), e.g. the p95 wait in seconds.
    pub metric: f64,
    /// Whether the fleet meets the target.
    pub meets: bool,
}

/// One fleet the search evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Nodes per type, in the order of the types.
    pub counts: Vec<u32>,
    /// Price of the fleet per hour.
    pub cost_per_hour: f64,
    /// What the evaluator said.
    pub verdict: Verdict,
}

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// The cheapest fleet found that meets the target (ties: fewer nodes, then the counts in
    /// order); `None` when not even every type at its bound does.
    pub best: Option<Point>,
    /// Every fleet evaluated, in the order evaluated.
    pub evaluated: Vec<Point>,
}

impl Search {
    /// The cost curve: the evaluated fleets by increasing cost, each one with a lower
    /// (finite) metric than every cheaper one.
    pub fn curve(&self) -> Vec<&Point> {
        let mut points: Vec<&Point> = self
            .evaluated
            .iter()
            .filter(|p| p.verdict.metric.is_finite())
            .collect();
        points.sort_by(|a, b| {
            a.cost_per_hour
                .total_cmp(&b.cost_per_hour)
                .then(a.verdict.metric.total_cmp(&b.verdict.metric))
        });
        let mut curve: Vec<&Point> = Vec::new();
        for p in points {
            if curve
                .last()
                .is_none_or(|c| p.verdict.metric < c.verdict.metric)
            {
                curve.push(p);
            }
        }
        curve
    }
}

/// Price of `counts` nodes of `types` per hour.
pub fn cost(types: &[PricedType], counts: &[u32]) -> f64 {
    types
        .iter()
        .zip(counts)
        .map(|(t, &n)| t.price_per_hour * f64::from(n))
        .sum()
}

/// Evaluates fleets once each, keeping every point.
struct Evaluations<'a, F> {
    types: &'a [PricedType],
    evaluate: F,
    seen: HashMap<Vec<u32>, Verdict>,
    points: Vec<Point>,
}

impl<F: FnMut(&[u32]) -> Verdict> Evaluations<'_, F> {
    /// Whether the first types' counts alone already cost at least as much as the best
    /// fleet found: then neither they nor more of the same can be the answer.
    fn costs_no_less_than_best(&self, prefix: &[u32]) -> bool {
        let floor = cost(self.types, prefix);
        self.points
            .iter()
            .filter(|p| p.verdict.meets)
            .any(|p| p.cost_per_hour <= floor)
    }

    fn meets(&mut self, counts: &[u32]) -> bool {
        if let Some(v) = self.seen.get(counts) {
            return v.meets;
        }
        let verdict = (self.evaluate)(counts);
        self.seen.insert(counts.to_vec(), verdict);
        self.points.push(Point {
            counts: counts.to_vec(),
            cost_per_hour: cost(self.types, counts),
            verdict,
        });
        verdict.meets
    }
}

/// Whether `a` is a better choice than `b`: cheaper, then fewer nodes, then smaller counts
/// in order.
fn better(a: &Point, b: &Point) -> bool {
    let total = |p: &Point| p.counts.iter().map(|&c| u64::from(c)).sum::<u64>();
    match a.cost_per_hour.total_cmp(&b.cost_per_hour) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => (total(a), &a.counts) < (total(b), &b.counts),
    }
}

fn pick_best(points: &[Point]) -> Option<Point> {
    points
        .iter()
        .filter(|p| p.verdict.meets)
        .fold(None::<&Point>, |best, p| match best {
            Some(b) if !better(p, b) => Some(b),
            _ => Some(p),
        })
        .cloned()
}

/// The cheapest fleet meeting the target, by walking the staircase of minimal fleets
/// (see the module header); `evaluate` is called once per fleet at most. Every minimal
/// fleet is among those evaluated, so the best of them is the answer.
pub fn cheapest(types: &[PricedType], evaluate: impl FnMut(&[u32]) -> Verdict) -> Search {
    let mut ev = Evaluations {
        types,
        evaluate,
        seen: HashMap::new(),
        points: Vec::new(),
    };
    let mut prefix = Vec::with_capacity(types.len());
    minimal_fleets(types, &mut prefix, &mut ev);
    Search {
        best: pick_best(&ev.points),
        evaluated: ev.points,
    }
}

/// Every fleet within the bounds, evaluated: the reference [`cheapest`] is checked against.
pub fn exhaustive(types: &[PricedType], evaluate: impl FnMut(&[u32]) -> Verdict) -> Search {
    let mut ev = Evaluations {
        types,
        evaluate,
        seen: HashMap::new(),
        points: Vec::new(),
    };
    let mut counts = vec![0u32; types.len()];
    'fleets: loop {
        ev.meets(&counts);
        // The next fleet, in odometer order.
        for (count, t) in counts.iter_mut().zip(types) {
            if *count < t.max_nodes {
                *count += 1;
                continue 'fleets;
            }
            *count = 0;
        }
        break;
    }
    Search {
        best: pick_best(&ev.points),
        evaluated: ev.points,
    }
}

/// Evaluates every minimal fleet that extends `prefix` (the counts of the first types).
fn minimal_fleets<F: FnMut(&[u32]) -> Verdict>(
    types: &[PricedType],
    prefix: &mut Vec<u32>,
    ev: &mut Evaluations<'_, F>,
) {
    match types.len() - prefix.len() {
        0 => {}
        1 => {
            fewest_last(prefix, types[prefix.len()].max_nodes, None, ev);
        }
        2 => staircase(types, prefix, ev),
        _ => {
            for n in 0..=types[prefix.len()].max_nodes {
                prefix.push(n);
                let done = ev.costs_no_less_than_best(prefix);
                if !done {
                    minimal_fleets(types, prefix, ev);
                }
                prefix.pop();
                if done {
                    break;
                }
            }
        }
    }
}

/// The fewest nodes of the last type that, after `prefix`, meet the target, up to `bound`.
/// `known`: a count that met it one step before on the staircase, so the walk goes down
/// from there; without one (or if it no longer meets it), bisection.
fn fewest_last<F: FnMut(&[u32]) -> Verdict>(
    prefix: &[u32],
    bound: u32,
    known: Option<u32>,
    ev: &mut Evaluations<'_, F>,
) -> Option<u32> {
    let mut fleet = prefix.to_vec();
    fleet.push(0);
    let mut at = |n: u32, ev: &mut Evaluations<'_, F>| {
        if let Some(last) = fleet.last_mut() {
            *last = n;
        }
        ev.meets(&fleet)
    };
    if let Some(mut n) = known
        && at(n, ev)
    {
        while n > 0 && at(n - 1, ev) {
            n -= 1;
        }
        return Some(n);
    }
    if !at(bound, ev) {
        return None;
    }
    let (mut lo, mut hi) = (0u32, bound);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid, ev) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(hi)
}

/// The two last types: for each count of the first, the fewest of the second, which never
/// grows as the first does.
fn staircase<F: FnMut(&[u32]) -> Verdict>(
    types: &[PricedType],
    prefix: &mut Vec<u32>,
    ev: &mut Evaluations<'_, F>,
) {
    let i = prefix.len();
    let mut known: Option<u32> = None;
    for n in 0..=types[i].max_nodes {
        prefix.push(n);
        if ev.costs_no_less_than_best(prefix) {
            prefix.pop();
            break;
        }
        known = fewest_last(prefix, types[i + 1].max_nodes, known, ev);
        prefix.pop();
        // Nothing of the second type needed: more of the first only adds cost.
        if known == Some(0) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(bounds: &[(f64, u32)]) -> Vec<PricedType> {
        bounds
            .iter()
            .enumerate()
            .map(|(i, &(price, max))| PricedType {
                name: format!("t{i}"),
                price_per_hour: price,
                max_nodes: max,
            })
            .collect()
    }

    /// Capacity adds up: a fleet meets the target when its capacity reaches `need`.
    fn capacity(caps: &[f64], need: f64) -> impl FnMut(&[u32]) -> Verdict {
        let caps = caps.to_vec();
        move |counts| {
            let have: f64 = caps
                .iter()
                .zip(counts)
                .map(|(c, &n)| c * f64::from(n))
                .sum();
            Verdict {
                metric: (need - have).max(0.0),
                meets: have >= need,
            }
        }
    }

    #[test]
    fn two_types_match_every_fleet_tried() {
        let t = types(&[(10.0, 12), (6.0, 12)]);
        let s = cheapest(&t, capacity(&[8.0, 4.0], 45.0));
        let e = exhaustive(&t, capacity(&[8.0, 4.0], 45.0));
        assert_eq!(
            s.best.as_ref().map(|p| &p.counts),
            e.best.as_ref().map(|p| &p.counts)
        );
        // 6 of the first (48 ≥ 45) costs 60; 5 + 2 (40 + 8) costs 62; 4 + 4 costs 64.
        assert_eq!(s.best.map(|p| p.counts), Some(vec![6, 0]));
        assert!(
            s.evaluated.len() < e.evaluated.len() / 4,
            "{}",
            s.evaluated.len()
        );
    }

    #[test]
    fn nothing_within_the_bounds_meets_it() {
        let t = types(&[(1.0, 2), (1.0, 2)]);
        let s = cheapest(&t, capacity(&[1.0, 1.0], 10.0));
        assert!(s.best.is_none());
        assert!(exhaustive(&t, capacity(&[1.0, 1.0], 10.0)).best.is_none());
    }

    #[test]
    fn the_curve_only_improves_with_cost() {
        let t = types(&[(3.0, 6), (2.0, 6), (5.0, 3)]);
        let s = cheapest(&t, capacity(&[3.0, 2.0, 6.0], 17.0));
        let curve: Vec<(f64, f64)> = s
            .curve()
            .iter()
            .map(|p| (p.cost_per_hour, p.verdict.metric))
            .collect();
        assert!(curve.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1));
        assert_eq!(curve.last().map(|c| c.1), Some(0.0));
    }
}
