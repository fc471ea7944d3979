//! Summary statistics for latency samples, shared by the campaign report,
//! `lazarus bench` and the control API's metrics, so that every median
//! and p99 lazarus prints is computed the same way (nearest rank).

use std::time::Duration;

use serde::Serialize;

/// Median, 99th percentile and range of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// Nearest-rank median (`NaN` without samples).
    pub median: f64,
    /// Nearest-rank 99th percentile (`NaN` without samples).
    pub p99: f64,
    /// Smallest sample (`NaN` without samples).
    pub min: f64,
    /// Largest sample (`NaN` without samples).
    pub max: f64,
}

/// Nearest-rank percentile `p` (0 to 100) of `sorted`, which must be in
/// ascending order; `None` when it is empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The statistics of `values`, in any order.
pub fn stats(values: &[f64]) -> Stats {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Stats {
        median: percentile(&v, 50.0).unwrap_or(f64::NAN),
        p99: percentile(&v, 99.0).unwrap_or(f64::NAN),
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// A duration in (fractional) milliseconds, the unit of every report.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile::<f64>(&[], 50.0), None);
        let s = stats(&[5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.p99, s.min, s.max), (3.0, 5.0, 1.0, 5.0));
    }

    #[test]
    fn integer_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7u64], 99.0), Some(7));
    }

    #[test]
    fn no_samples_is_nan() {
        let s = stats(&[]);
        assert!(s.median.is_nan() && s.p99.is_nan() && s.min.is_nan() && s.max.is_nan());
    }

    #[test]
    fn milliseconds() {
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
