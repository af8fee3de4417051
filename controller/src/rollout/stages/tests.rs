use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::*;

const CANARY: [StageSize; 4] = [
    StageSize::Count(1),
    StageSize::Percent(10),
    StageSize::Percent(50),
    StageSize::Percent(100),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    rollout: StagesSpec,
}

fn parse(text: &str) -> Result<StagesSpec, String> {
    toml::from_str::<Doc>(text)
        .map(|d| d.rollout)
        .map_err(|e| e.to_string())
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i:04}")).collect()
}

fn unlabelled(n: usize) -> Vec<(String, BTreeMap<String, String>)> {
    names(n).into_iter().map(|h| (h, BTreeMap::new())).collect()
}

/// Hosts named `{zone}{i}` with label zone=`{zone}`, `count` per zone; zone "" means no label.
fn zoned(zones: &[(&str, usize)]) -> Vec<(String, BTreeMap<String, String>)> {
    zones
        .iter()
        .flat_map(|&(zone, count)| {
            (0..count).map(move |i| {
                let mut labels = BTreeMap::from([("role".to_string(), "web".to_string())]);
                let name = if zone.is_empty() {
                    format!("bare{i}")
                } else {
                    labels.insert("zone".into(), zone.into());
                    format!("{zone}{i}")
                };
                (name, labels)
            })
        })
        .collect()
}

fn zone_of(host: &str) -> &str {
    host.trim_end_matches(|c: char| c.is_ascii_digit())
}

mod sizes {
    use super::*;

    #[test]
    fn one_host_is_one_stage() {
        assert_eq!(stage_sizes(1, &CANARY), Ok(vec![1]));
    }

    #[test]
    fn three_hosts_drop_the_stage_that_adds_nothing() {
        // 1, 10% -> 1 (adds nothing, dropped), 50% -> 2, 100% -> 3.
        assert_eq!(stage_sizes(3, &CANARY), Ok(vec![1, 2, 3]));
    }

    #[test]
    fn larger_fleets() {
        assert_eq!(stage_sizes(10, &CANARY), Ok(vec![1, 5, 10]));
        assert_eq!(stage_sizes(11, &CANARY), Ok(vec![1, 2, 6, 11]));
        assert_eq!(stage_sizes(100, &CANARY), Ok(vec![1, 10, 50, 100]));
        assert_eq!(stage_sizes(1000, &CANARY), Ok(vec![1, 100, 500, 1000]));
    }

    #[test]
    fn percentages_round_up() {
        let p = |v: &[u32]| v.iter().map(|&p| StageSize::Percent(p)).collect::<Vec<_>>();
        assert_eq!(stage_sizes(7, &p(&[25, 100])), Ok(vec![2, 7]));
        assert_eq!(stage_sizes(10, &p(&[33, 66, 100])), Ok(vec![4, 7, 10]));
        assert_eq!(stage_sizes(1000, &p(&[1, 100])), Ok(vec![10, 1000]));
        assert_eq!(
            stage_sizes(99, &p(&[1, 100])),
            Ok(vec![1, 99]),
            "at least one"
        );
    }

    #[test]
    fn counts_cap_at_the_fleet_and_never_shrink() {
        let s = |v: &[&str]| {
            v.iter()
                .map(|s| StageSize::parse(s).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(stage_sizes(10, &s(&["20", "100%"])), Ok(vec![10]));
        // 10% of 20 is 2, below the 5 already done: that stage adds nothing.
        assert_eq!(stage_sizes(20, &s(&["5", "10%", "100%"])), Ok(vec![5, 20]));
        assert_eq!(
            stage_sizes(200, &s(&["5", "10%", "100%"])),
            Ok(vec![5, 20, 200])
        );
        // A count as the last stage is fine where it covers the fleet.
        assert_eq!(stage_sizes(3, &s(&["1", "5"])), Ok(vec![1, 3]));
    }

    #[test]
    fn the_last_stage_must_reach_every_host() {
        let err = stage_sizes(10, &[StageSize::Count(1), StageSize::Percent(50)]).unwrap_err();
        assert_eq!(
            err,
            StageError::Short {
                stage: 2,
                size: StageSize::Percent(50),
                covers: 5,
                total: 10
            }
        );
        assert!(err.to_string().contains("stage 2 (50%)"), "{err}");
        assert!(err.to_string().contains("5 of 10"), "{err}");
        assert!(stage_sizes(10, &[StageSize::Count(5)]).is_err());
    }

    #[test]
    fn no_stages_or_no_hosts() {
        assert!(matches!(stage_sizes(5, &[]), Err(StageError::Empty { .. })));
        assert_eq!(stage_sizes(0, &CANARY), Ok(vec![]));
    }
}

mod resolve {
    use super::*;

    #[test]
    fn no_stages_is_one_stage_of_every_host() {
        let s = parse("[rollout]").unwrap();
        assert_eq!(s, StagesSpec::default());
        let stages = s.validate().unwrap();
        assert_eq!(stages, Stages::default());
        assert_eq!(
            stages
                .resolve(7)
                .iter()
                .map(|r| r.hosts)
                .collect::<Vec<_>>(),
            [7]
        );
    }

    #[test]
    fn resolving_merges_the_gate_of_a_dropped_stage() {
        let s = parse(
            r#"
            [[rollout.stage]]
            hosts = "1"
            bake = "5m"
            [[rollout.stage]]
            hosts = "10%"
            bake = "10m"
            promotion = "manual"
            [[rollout.stage]]
            hosts = "50%"
            bake = "1m"
            [[rollout.stage]]
            hosts = "100%"
            "#,
        )
        .unwrap()
        .validate()
        .unwrap();
        let m = |s: u64| Duration::from_secs(60 * s);
        let r = |index, hosts, bake, promotion| ResolvedStage {
            index,
            hosts,
            bake,
            promotion,
        };
        // On 3 hosts the 10% stage adds nothing: its manual gate and longer bake move to
        // the canary stage, so the operator still approves before more hosts move.
        assert_eq!(
            s.resolve(3),
            vec![
                r(0, 1, m(10), Promotion::Manual),
                r(2, 2, m(1), Promotion::Auto),
                r(3, 3, m(0), Promotion::Auto),
            ]
        );
        assert_eq!(
            s.resolve(100),
            vec![
                r(0, 1, m(5), Promotion::Auto),
                r(1, 10, m(10), Promotion::Manual),
                r(2, 50, m(1), Promotion::Auto),
                r(3, 100, m(0), Promotion::Auto),
            ]
        );
        assert_eq!(s.resolve(1), vec![r(0, 1, m(10), Promotion::Manual)]);
        assert_eq!(s.resolve(0), vec![]);
    }
}

mod order {
    use super::*;

    #[test]
    fn deterministic_whatever_the_input_order() {
        let hosts = unlabelled(50);
        let a = pick_order(&hosts, None, "d-123");
        let mut reversed = hosts.clone();
        reversed.reverse();
        assert_eq!(pick_order(&reversed, None, "d-123"), a);
        assert_eq!(pick_order(&hosts, None, "d-123"), a);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, names(50), "a permutation of the hosts");
        assert_ne!(a, names(50), "shuffled, not by name");
        assert_ne!(pick_order(&hosts, None, "d-124"), a, "the seed matters");
    }

    #[test]
    fn pinned_order_survives_upgrades() {
        // The hash is part of the plan a resumed deployment recomputes: it must not move.
        assert_eq!(
            pick_order(&unlabelled(5), None, "web"),
            pick_order(&unlabelled(5), None, "web")
        );
        assert_eq!(rank("web", b"host", "h0000"), rank("web", b"host", "h0000"));
        assert_ne!(rank("web", b"host", "h0000"), rank("web", b"host", "h0001"));
        assert_ne!(rank("we", b"host", "bh0000"), rank("web", b"host", "h0000"));
    }

    #[test]
    fn spread_evenly_over_three_zones() {
        let hosts = zoned(&[("a", 3), ("b", 3), ("c", 3)]);
        for seed in ["d-1", "d-2", "d-3", "web"] {
            let order = pick_order(&hosts, Some("zone"), seed);
            assert_eq!(order.len(), 9);
            let zones: Vec<&str> = order.iter().map(|h| zone_of(h)).collect();
            for round in zones.chunks(3) {
                let set: BTreeSet<_> = round.iter().collect();
                assert_eq!(set.len(), 3, "{seed}: {zones:?}");
            }
        }
    }

    #[test]
    fn uneven_zones_round_robin_until_a_zone_runs_out() {
        let hosts = zoned(&[("a", 5), ("b", 3), ("c", 1)]);
        let order = pick_order(&hosts, Some("zone"), "d-42");
        let zones: Vec<&str> = order.iter().map(|h| zone_of(h)).collect();
        let first: BTreeSet<_> = zones[..3].iter().collect();
        assert_eq!(
            first.len(),
            3,
            "a canary of 3 takes one per zone: {zones:?}"
        );
        // Every prefix is as even as the zones allow: no zone is two hosts ahead of
        // another zone that still has hosts left.
        for k in 1..=zones.len() {
            let count = |z: &str| zones[..k].iter().filter(|&&x| x == z).count();
            let sizes = [("a", 5), ("b", 3), ("c", 1)];
            for (z1, _) in sizes {
                for (z2, n2) in sizes {
                    if count(z2) < n2 {
                        assert!(count(z1) <= count(z2) + 1, "prefix {k}: {zones:?}");
                    }
                }
            }
        }
        assert_eq!(&zones[7..], ["a", "a"]);
    }

    #[test]
    fn hosts_without_the_label_form_their_own_group() {
        let hosts = zoned(&[("a", 2), ("b", 2), ("", 2)]);
        let order = pick_order(&hosts, Some("zone"), "d-7");
        let groups: BTreeSet<_> = order[..3].iter().map(|h| zone_of(h)).collect();
        assert_eq!(groups, BTreeSet::from(["a", "b", "bare"]), "{order:?}");
    }

    #[test]
    fn spread_by_nothing_or_a_missing_label_is_plain_order() {
        let hosts = zoned(&[("a", 4), ("b", 4)]);
        let plain = pick_order(&hosts, None, "s");
        assert_eq!(pick_order(&hosts, Some("rack"), "s"), plain);
        assert_eq!(
            pick_order(&hosts, Some("role"), "s"),
            plain,
            "one shared value"
        );
    }

    #[test]
    fn duplicates_count_once_and_empty_is_empty() {
        let mut hosts = unlabelled(3);
        hosts.push(hosts[0].clone());
        assert_eq!(pick_order(&hosts, None, "s").len(), 3);
        assert_eq!(pick_order(&hosts, Some("zone"), "s").len(), 3);
        assert!(pick_order(&[], Some("zone"), "s").is_empty());
    }
}

mod plan {
    use super::*;

    fn shape(plan: &[Vec<Vec<String>>]) -> Vec<Vec<usize>> {
        plan.iter()
            .map(|s| s.iter().map(Vec::len).collect())
            .collect()
    }

    #[test]
    fn three_hosts_one_per_stage() {
        let order = pick_order(&unlabelled(3), None, "d");
        let sizes = stage_sizes(3, &CANARY).unwrap();
        let plan = plan_stages(order.clone(), &sizes, BatchSize::Count(1));
        assert_eq!(shape(&plan), [vec![1], vec![1], vec![1]]);
        assert_eq!(plan.concat().concat(), order);
    }

    #[test]
    fn batches_are_sized_against_the_whole_fleet() {
        let order = names(100);
        let sizes = stage_sizes(100, &CANARY).unwrap();
        let plan = plan_stages(order.clone(), &sizes, BatchSize::Percent(25));
        assert_eq!(shape(&plan), [vec![1], vec![9], vec![25, 15], vec![25, 25]]);
        assert_eq!(plan.concat().concat(), order, "every host once, in order");
        assert_eq!(plan[1][0][0], "h0001");
    }

    #[test]
    fn a_thousand_hosts() {
        let order = pick_order(&unlabelled(1000), None, "d-big");
        let sizes = stage_sizes(1000, &CANARY).unwrap();
        let plan = plan_stages(order.clone(), &sizes, BatchSize::Count(100));
        assert_eq!(
            shape(&plan),
            [vec![1], vec![99], vec![100; 4], vec![100; 5]]
        );
        assert_eq!(plan.concat().concat(), order);
    }

    #[test]
    fn one_host() {
        let plan = plan_stages(
            names(1),
            &stage_sizes(1, &CANARY).unwrap(),
            BatchSize::Percent(50),
        );
        assert_eq!(plan, vec![vec![vec!["h0000".to_string()]]]);
    }

    #[test]
    fn odd_sizes_are_clamped() {
        let plan = plan_stages(names(4), &[2, 1, 9], BatchSize::Count(1));
        assert_eq!(shape(&plan), [vec![1, 1], vec![], vec![1, 1]]);
        assert!(plan_stages(vec![], &[], BatchSize::Count(1)).is_empty());
    }

    #[test]
    fn a_zone_spread_canary() {
        let hosts = zoned(&[("a", 4), ("b", 3), ("c", 3)]);
        let order = pick_order(&hosts, Some("zone"), "d-9");
        let sizes = stage_sizes(10, &[StageSize::Count(3), StageSize::Percent(100)]).unwrap();
        let plan = plan_stages(order, &sizes, BatchSize::Count(2));
        assert_eq!(shape(&plan), [vec![2, 1], vec![2, 2, 2, 1]]);
        let canary: BTreeSet<_> = plan[0]
            .concat()
            .iter()
            .map(|h| zone_of(h).to_string())
            .collect();
        assert_eq!(canary.len(), 3, "one canary per zone: {plan:?}");
    }
}
