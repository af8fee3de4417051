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

fn short(sizes: &[&str]) -> StagesSpec {
    StagesSpec {
        stages: Some(sizes.iter().map(|s| StageSize::parse(s).unwrap()).collect()),
        ..StagesSpec::default()
    }
}

#[test]
fn stage_size_parsing() {
    assert_eq!(StageSize::parse("1"), Ok(StageSize::Count(1)));
    assert_eq!(StageSize::parse(" 10% "), Ok(StageSize::Percent(10)));
    assert_eq!(StageSize::parse("100%"), Ok(StageSize::Percent(100)));
    assert_eq!(StageSize::parse("5000"), Ok(StageSize::Count(5000)));
    for bad in ["0", "0%", "101%", "-1", "1.5", "abc", "", "%", "10 %%"] {
        let err = StageSize::parse(bad).unwrap_err();
        assert!(err.contains(&format!("{:?}", bad.trim())), "{err}");
    }
    assert_eq!(StageSize::Percent(10).to_string(), "10%");
    assert_eq!(StageSize::Count(3).to_string(), "3");
}

#[test]
fn short_form_with_defaults() {
    let s = parse(r#"rollout = { stages = ["1", "10%", "50%", "100%"] }"#).unwrap();
    let stages = s.validate().unwrap();
    assert_eq!(stages.spread_by(), None);
    assert_eq!(
        stages.stages().iter().map(|s| s.size).collect::<Vec<_>>(),
        CANARY
    );
    assert!(
        stages
            .stages()
            .iter()
            .all(|s| s.bake.is_zero() && s.promotion == Promotion::Auto)
    );
}

#[test]
fn short_form_accepts_integers_and_a_shared_spread_by() {
    let s = parse("[rollout]\nstages = [1, \"50%\", \"100%\"]\nspread_by = \"zone\"").unwrap();
    let stages = s.validate().unwrap();
    assert_eq!(stages.stages()[0].size, StageSize::Count(1));
    assert_eq!(stages.spread_by(), Some("zone"));
}

#[test]
fn long_form_with_defaults() {
    let s = parse(
        r#"
        [[rollout.stage]]
        hosts = "1"
        bake = "5m"
        promotion = "manual"
        spread_by = "zone"

        [[rollout.stage]]
        hosts = "100%"
        "#,
    )
    .unwrap();
    let stages = s.validate().unwrap();
    assert_eq!(
        stages.stages(),
        vec![
            Stage {
                size: StageSize::Count(1),
                bake: Duration::from_secs(300),
                promotion: Promotion::Manual
            },
            Stage {
                size: StageSize::Percent(100),
                bake: Duration::ZERO,
                promotion: Promotion::Auto
            },
        ]
    );
    assert_eq!(stages.spread_by(), Some("zone"));
    let back: StagesSpec = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s, "round-trips");
}

#[test]
fn parse_errors_name_the_value() {
    for (text, needle) in [
        ("[rollout]\nstages = [\"1\", \"0%\"]", "\"0%\""),
        ("[rollout]\nstages = [\"1\", \"ten\"]", "\"ten\""),
        ("[rollout]\nstages = [1.5]", "1.5"),
        (
            "[[rollout.stage]]\nhosts = \"1\"\npromotion = \"later\"",
            "later",
        ),
        (
            "[[rollout.stage]]\nhosts = \"1\"\nbake = \"a while\"",
            "a while",
        ),
        (
            "[[rollout.stage]]\nhosts = \"1\"\nbake_time = \"5m\"",
            "bake_time",
        ),
        ("[[rollout.stage]]\nbake = \"5m\"", "hosts"),
        ("[rollout]\nstagez = [\"100%\"]", "stagez"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn both_forms_are_refused() {
    let s = parse("[rollout]\nstages = [\"100%\"]\n[[rollout.stage]]\nhosts = \"100%\"").unwrap();
    assert_eq!(s.validate(), Err(StageError::BothForms));
}

#[test]
fn stages_must_grow() {
    let err = short(&["10%", "5%", "100%"]).validate().unwrap_err();
    assert!(err.to_string().contains("`rollout.stages[1]`"), "{err}");
    assert!(err.to_string().contains("5%"), "{err}");
    assert!(short(&["5", "5", "100%"]).validate().is_err());
    assert!(short(&["50%", "100%", "100%"]).validate().is_err());
    assert!(short(&["5", "10%", "3", "100%"]).validate().is_err());
    // Counts and percentages compare only against the fleet.
    assert!(short(&["5", "1%", "100%"]).validate().is_ok());
    let long = parse(
        "[[rollout.stage]]\nhosts = \"2\"\n[[rollout.stage]]\nhosts = \"1\"\n[[rollout.stage]]\nhosts = \"100%\"",
    )
    .unwrap();
    let err = long.validate().unwrap_err();
    assert!(
        err.to_string().contains("`rollout.stage[1].hosts`"),
        "{err}"
    );
}

#[test]
fn the_last_stage_must_be_every_host() {
    let err = short(&["1", "50%"]).validate().unwrap_err();
    assert_eq!(
        err,
        StageError::NotAll {
            key: "rollout.stages[1]".into(),
            size: StageSize::Percent(50)
        }
    );
    assert!(err.to_string().contains("end with \"100%\""));
    assert!(matches!(
        short(&[]).validate(),
        Err(StageError::Empty {
            key: "rollout.stages"
        })
    ));
}

#[test]
fn one_spread_by_key_for_the_whole_rollout() {
    let stage = |spread_by: Option<&str>, hosts: &str| StageSpec {
        hosts: StageSize::parse(hosts).unwrap(),
        bake: Duration::ZERO,
        promotion: Promotion::Auto,
        spread_by: spread_by.map(str::to_string),
    };
    let spec = |top: Option<&str>, a: Option<&str>, b: Option<&str>| StagesSpec {
        stages: None,
        stage: vec![stage(a, "1"), stage(b, "100%")],
        spread_by: top.map(str::to_string),
    };
    let ok = spec(Some("zone"), Some("zone"), None).validate().unwrap();
    assert_eq!(ok.spread_by(), Some("zone"));
    let ok = spec(None, None, Some("rack")).validate().unwrap();
    assert_eq!(ok.spread_by(), Some("rack"));
    let err = spec(Some("zone"), None, Some("rack"))
        .validate()
        .unwrap_err();
    assert_eq!(
        err,
        StageError::SpreadByConflict {
            key: "rollout.stage[1].spread_by".into(),
            value: "rack".into(),
            other: "zone".into()
        }
    );
    let err = spec(Some(" "), None, None).validate().unwrap_err();
    assert!(err.to_string().contains("`rollout.spread_by`"), "{err}");
}

#[test]
fn the_canonical_form_is_short_unless_a_stage_bakes_or_waits() {
    let plain = parse("[rollout]\nstages = [1, \"10%\", \"100%\"]\nspread_by = \"zone\"")
        .unwrap()
        .validate()
        .unwrap();
    let spec = plain.to_spec();
    assert_eq!(
        spec.stages,
        Some(vec![
            StageSize::Count(1),
            StageSize::Percent(10),
            StageSize::Percent(100)
        ])
    );
    assert!(spec.stage.is_empty());
    assert_eq!(spec.validate().unwrap(), plain);

    let long = parse(
        "[[rollout.stage]]\nhosts = \"1\"\nbake = \"1m\"\nspread_by = \"zone\"\n[[rollout.stage]]\nhosts = \"100%\"\npromotion = \"manual\"",
    )
    .unwrap()
    .validate()
    .unwrap();
    let spec = long.to_spec();
    assert_eq!(spec.stages, None);
    assert_eq!(spec.stage.len(), 2);
    assert_eq!(spec.spread_by.as_deref(), Some("zone"));
    assert!(
        spec.stage.iter().all(|s| s.spread_by.is_none()),
        "said once, in [rollout]"
    );
    assert_eq!(spec.validate().unwrap(), long);
    let back: StagesSpec = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
}
