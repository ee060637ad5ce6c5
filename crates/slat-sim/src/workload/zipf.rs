//! Exact Zipf sampling with a table that fits in L1: rejection from a piecewise-constant
//! envelope whose pieces are picked with an alias table.
//!
//! The ranks are cut into buckets within which the Zipf weight falls by at most
//! [`BUCKET_RATIO`] (the hottest ranks get a bucket each). The envelope over a bucket is flat at
//! the weight of its first rank, so a bucket is chosen with probability proportional to
//! `width * weight(first)` (Walker/Vose alias table, O(1)), a rank uniformly within it, and the
//! rank kept with probability `weight(rank) / weight(first)`, at least `1 / BUCKET_RATIO`; a
//! precomputed squeeze accepts most draws without a power computation. The result is exactly
//! Zipf; the table has O(s · ln n) entries, a few KiB even for billions of ranks, so sampling
//! stays in cache whatever the hot-set size.

use rand::RngCore;

/// Largest fall of the Zipf weight inside one bucket.
const BUCKET_RATIO: f64 = 1.05;
/// Bits of the coin that picks between an alias entry's own bucket and its alias.
const COIN_BITS: u32 = 26;
const COIN_MASK: u64 = (1 << COIN_BITS) - 1;

/// Draws 0-based ranks `k` in `0..n` with probability proportional to `1 / (k + 1)^s`.
#[derive(Debug, Clone)]
pub struct ZipfSampler {
    n: u64,
    s: f64,
    buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// First rank.
    start: u64,
    /// Number of ranks (>= 1).
    width: u64,
    /// Alias table: keep this bucket when the 26-bit coin is below `threshold`, else `alias`.
    threshold: u32,
    alias: u32,
    /// Accept without computing a power when the 32-bit uniform is below this.
    squeeze: u32,
}

impl ZipfSampler {
    /// A sampler over `n` ranks with exponent `s`; `None` unless `1 <= n <= 2^32` and `s` is
    /// finite and >= 0.
    pub fn new(n: u64, s: f64) -> Option<Self> {
        if n == 0 || n > 1 << 32 || !s.is_finite() || s < 0.0 {
            return None;
        }
        let weight = |k: u64| ((k + 1) as f64).powf(-s);
        // Ranks per bucket grow geometrically: (end / (start + 1))^s <= BUCKET_RATIO.
        let growth = if s == 0.0 { f64::INFINITY } else { BUCKET_RATIO.powf(1.0 / s) };
        let mut buckets = Vec::new();
        let mut mass = Vec::new();
        let mut start = 0u64;
        while start < n {
            let end = ((start + 1) as f64 * growth).floor();
            let end = if end.is_finite() && end < n as f64 { (end as u64).max(start + 1) } else { n };
            let width = end - start;
            let squeeze = (weight(end - 1) / weight(start)).clamp(0.0, 1.0);
            buckets.push(Bucket {
                start,
                width,
                threshold: 1 << COIN_BITS,
                alias: 0,
                squeeze: (squeeze * 4_294_967_296.0).min(u32::MAX as f64) as u32,
            });
            mass.push(width as f64 * weight(start));
            start = end;
        }
        fill_alias(&mut buckets, &mass);
        Some(ZipfSampler { n, s, buckets })
    }

    /// Population size.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Exponent.
    pub fn s(&self) -> f64 {
        self.s
    }

    /// Entries in the sampling table (a measure of its memory: 32 bytes each).
    pub fn table_len(&self) -> usize {
        self.buckets.len()
    }

    /// Draw a 0-based rank.
    #[inline]
    pub fn sample<R: RngCore + ?Sized>(&self, rng: &mut R) -> u64 {
        let r = rng.next_u64();
        self.sample_from(r, rng)
    }

    /// Draw a 0-based rank starting from `r`, a fresh random word; bits 26..32 of `r` are left
    /// unused, for the caller. More words come from `rng` when needed.
    #[inline]
    pub(crate) fn sample_from<R: RngCore + ?Sized>(&self, mut r: u64, rng: &mut R) -> u64 {
        let len = self.buckets.len() as u64;
        loop {
            let idx = (((r >> 32) * len) >> 32) as usize;
            let own = self.buckets[idx];
            // A select, not a branch: the coin is unpredictable.
            let pick = if (r & COIN_MASK) < u64::from(own.threshold) { idx } else { own.alias as usize };
            let b = self.buckets[pick];
            if b.width == 1 {
                return b.start;
            }
            let r2 = rng.next_u64();
            let k = b.start + (((r2 >> 32) * b.width) >> 32);
            let u = r2 as u32;
            if u < b.squeeze || self.accept_slow(u, b.start, k) {
                return k;
            }
            r = rng.next_u64();
        }
    }

    /// Exact acceptance test: `u / 2^32 < weight(k) / weight(start)`.
    #[cold]
    fn accept_slow(&self, u: u32, start: u64, k: u64) -> bool {
        let ratio = ((start + 1) as f64 / (k + 1) as f64).powf(self.s);
        (f64::from(u) + 0.5) * (1.0 / 4_294_967_296.0) < ratio
    }
}

/// Vose's alias method: sets `threshold` and `alias` so that bucket `i` is picked with
/// probability `mass[i] / sum(mass)`.
fn fill_alias(buckets: &mut [Bucket], mass: &[f64]) {
    let n = buckets.len();
    let total: f64 = mass.iter().sum();
    let mut scaled: Vec<f64> = mass.iter().map(|m| m * n as f64 / total).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
    while let (Some(&l), Some(&g)) = (small.last(), large.last()) {
        small.pop();
        buckets[l].threshold = (scaled[l] * (1u64 << COIN_BITS) as f64) as u32;
        buckets[l].alias = g as u32;
        scaled[g] += scaled[l] - 1.0;
        if scaled[g] < 1.0 {
            large.pop();
            small.push(g);
        }
    }
    // Entries left over (rounding) keep their own bucket with certainty.
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn histogram(z: &ZipfSampler, draws: usize) -> Vec<u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut h = vec![0u64; z.n() as usize];
        for _ in 0..draws {
            h[z.sample(&mut rng) as usize] += 1;
        }
        h
    }

    fn expected(n: u64, s: f64) -> Vec<f64> {
        let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let t: f64 = w.iter().sum();
        w.into_iter().map(|x| x / t).collect()
    }

    fn check(n: u64, s: f64) {
        let z = ZipfSampler::new(n, s).unwrap();
        let draws = 1_000_000;
        let h = histogram(&z, draws);
        let p = expected(n, s);
        // Individual head ranks and the mass of coarse groups of tail ranks.
        for k in 0..10.min(n as usize) {
            let got = h[k] as f64 / draws as f64;
            assert!((got - p[k]).abs() < 0.004, "n={n} s={s} rank {k}: {got} vs {}", p[k]);
        }
        let groups = 16usize;
        let per = (n as usize).div_ceil(groups);
        for g in 0..groups {
            if g * per >= n as usize {
                break;
            }
            let r = g * per..((g + 1) * per).min(n as usize);
            let got: f64 = h[r.clone()].iter().sum::<u64>() as f64 / draws as f64;
            let want: f64 = p[r].iter().sum();
            assert!((got - want).abs() < 0.004, "n={n} s={s} group {g}: {got} vs {want}");
        }
    }

    #[test]
    fn matches_zipf() {
        check(100, 1.1);
        check(5000, 1.0);
        check(5000, 0.6);
        check(300, 2.5);
        check(7, 0.0);
    }

    #[test]
    fn table_stays_small() {
        let z = ZipfSampler::new(1 << 32, 1.0).unwrap();
        assert!(z.table_len() < 1000, "{}", z.table_len());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let top = (0..100_000).filter(|_| z.sample(&mut rng) < 1 << 16).count();
        // With s = 1, ranks below 2^16 hold H(2^16) / H(2^32) ~ 0.51 of the mass.
        assert!((45_000..57_000).contains(&top), "{top}");
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(ZipfSampler::new(0, 1.0).is_none());
        assert!(ZipfSampler::new(10, -1.0).is_none());
        assert!(ZipfSampler::new(10, f64::NAN).is_none());
        assert!(ZipfSampler::new((1 << 32) + 1, 1.0).is_none());
    }
}
