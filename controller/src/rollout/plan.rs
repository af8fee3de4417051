//! Batch planning: which hosts move together. Pure and deterministic: the same targets
//! and batch size always give the same batches, so a resumed deployment finds its plan.

use crate::spec::BatchSize;

/// Splits `hosts` (sorted by name first) into batches of `size`.
pub fn batches(mut hosts: Vec<String>, size: BatchSize) -> Vec<Vec<String>> {
    hosts.sort();
    hosts.dedup();
    let per = size.hosts_per_batch(hosts.len());
    hosts.chunks(per).map(<[String]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).rev().map(|i| format!("h{i:02}")).collect()
    }

    #[test]
    fn quarter_of_ten_is_four_batches_of_three_or_less() {
        let b = batches(names(10), BatchSize::Percent(25));
        let sizes: Vec<_> = b.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        assert_eq!(b[0], vec!["h00", "h01", "h02"]);
    }

    #[test]
    fn count_and_edge_cases() {
        assert_eq!(batches(names(4), BatchSize::Count(1)).len(), 4);
        assert_eq!(batches(names(3), BatchSize::Count(10)).len(), 1);
        assert!(batches(vec![], BatchSize::Count(1)).is_empty());
        let dup = vec!["a".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(batches(dup, BatchSize::Count(1)).len(), 2);
    }
}
