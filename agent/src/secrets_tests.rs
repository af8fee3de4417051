//! Secret planning, the tmpfs check on sample mount tables, and the file layout.

use std::os::unix::fs::PermissionsExt;

use drover_shared::proto::{ErrorKind, SecretValue};

use super::*;
use crate::runtime::MountType;

const VALUE: &[u8] = b"hunter2-secret-value";

fn secrets(delivery: SecretDelivery, mount: &str, names: &[&str]) -> Secrets {
    Secrets {
        delivery: delivery as i32,
        mount_path: mount.into(),
        values: names
            .iter()
            .map(|n| SecretValue {
                name: n.to_string(),
                value: VALUE.to_vec(),
            })
            .collect(),
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A mount table like a systemd host's: / on ext4, /run on tmpfs, the agent's runtime
/// directory bind-mounted (tmpfs) by its sandbox, a path with a space, and /dev/shm
/// mounted twice (the later one wins).
const MOUNTINFO_SAMPLE: &str = "\
22 1 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 27 0:25 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1620404k,mode=755
31 27 254:0 /var/lib/drover-agent /var/lib/drover-agent rw,relatime shared:1 - ext4 /dev/vda rw
32 30 0:25 /drover-agent /run/drover-agent rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
40 27 254:1 / /srv/my\\040data rw,relatime - xfs /dev/vdb rw
41 27 0:26 / /srv/my\\040data/ram rw,relatime master:3 - ramfs ramfs rw
45 27 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
46 45 254:0 /shm /dev/shm rw,relatime - ext4 /dev/vda rw
";

#[test]
fn the_filesystem_of_a_path_is_its_longest_mount_prefix() {
    let of = |p: &str| filesystem_of(MOUNTINFO_SAMPLE, Path::new(p)).unwrap();
    let m = of("/run/drover-agent/secrets");
    assert_eq!(m.mount_point, Path::new("/run/drover-agent"));
    assert_eq!(m.fs_type, "tmpfs");
    assert_eq!(of("/run/other").mount_point, Path::new("/run"));
    // Component-wise: /running is not under /run.
    assert_eq!(of("/running/secrets").fs_type, "ext4");
    assert_eq!(of("/var/lib/drover-agent/agent.key").fs_type, "ext4");
    assert_eq!(of("/srv/my data/ram/x").fs_type, "ramfs");
    assert_eq!(of("/srv/my data/x").fs_type, "xfs");
    // Stacked mounts: the one listed last is what the path sees.
    assert_eq!(of("/dev/shm/secrets").fs_type, "ext4");
    assert!(filesystem_of("garbage line\n", Path::new("/x")).is_none());
}

#[test]
fn a_secrets_dir_off_tmpfs_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("mountinfo");
    fs::write(&table, MOUNTINFO_SAMPLE).unwrap();
    let ok = SecretsDir::with_mountinfo("/run/drover-agent/secrets", &table);
    ok.check_tmpfs().unwrap();
    SecretsDir::with_mountinfo("/srv/my data/ram/s", &table)
        .check_tmpfs()
        .unwrap();
    let e = SecretsDir::with_mountinfo("/var/lib/drover-agent/secrets", &table)
        .check_tmpfs()
        .unwrap_err();
    assert!(e.contains("/var/lib/drover-agent/secrets"), "{e}");
    assert!(e.contains("ext4") && e.contains("--secrets-dir"), "{e}");
    let e = SecretsDir::with_mountinfo("/run/x", dir.path().join("absent"))
        .check_tmpfs()
        .unwrap_err();
    assert!(e.contains("/run/x"), "{e}");
}

#[test]
fn files_are_written_read_only_under_the_container_name_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run/secrets");
    let store = SecretsDir::new(&root);
    let Delivery::Files { mount, files } = plan(
        Some(&secrets(
            SecretDelivery::Files,
            "",
            &["DB_PASSWORD", "API_KEY"],
        )),
        "web",
        &[],
        &[],
    )
    .unwrap() else {
        panic!("files expected")
    };
    assert_eq!(mount, DEFAULT_MOUNT);
    let written = store.write("drover-h1-web-v1-abc123", &files).unwrap();
    assert_eq!(written, root.join("drover-h1-web-v1-abc123"));
    assert_eq!(mode(&root), ROOT_MODE);
    assert_eq!(mode(&written), CONTAINER_DIR_MODE);
    for name in ["DB_PASSWORD", "API_KEY"] {
        let f = written.join(name);
        assert_eq!(fs::read(&f).unwrap(), VALUE);
        assert_eq!(mode(&f), FILE_MODE);
    }
    // Nothing else is left in the root (no temporary directory).
    let entries: Vec<_> = fs::read_dir(&root).unwrap().collect();
    assert_eq!(entries.len(), 1);

    // Writing again replaces the set.
    let one = &files[..1];
    store.write("drover-h1-web-v1-abc123", one).unwrap();
    assert_eq!(fs::read_dir(&written).unwrap().count(), 1);

    store.remove("drover-h1-web-v1-abc123").unwrap();
    assert!(!written.exists());
    store.remove("drover-h1-web-v1-abc123").unwrap();
    assert!(store.remove("../escape").is_err());
    assert!(format!("{files:?}").contains("DB_PASSWORD"));
    assert!(!format!("{files:?}").contains("hunter2"));
}

#[test]
fn orphans_are_this_agents_directories_without_a_live_container() {
    let dir = tempfile::tempdir().unwrap();
    let store = SecretsDir::new(dir.path());
    for name in [
        "drover-h1-web-v1-aaaaaa",
        "drover-h1-web-v2-bbbbbb",
        "drover-h2-web-v1-cccccc",
        ".drover-h1-web-1.0-dddddd.0badf00d.tmp",
    ] {
        fs::create_dir(dir.path().join(name)).unwrap();
    }
    let live = HashSet::from(["drover-h1-web-v2-bbbbbb".to_string()]);
    let mut orphans = store.orphans("h1", &live);
    orphans.sort();
    assert_eq!(
        orphans,
        [
            ".drover-h1-web-1.0-dddddd.0badf00d.tmp",
            "drover-h1-web-v1-aaaaaa"
        ]
    );
    for o in &orphans {
        store.remove_orphan(o).unwrap();
    }
    assert!(store.orphans("h1", &live).is_empty());
    assert!(dir.path().join("drover-h2-web-v1-cccccc").exists());
    assert!(dir.path().join("drover-h1-web-v2-bbbbbb").exists());
}

#[test]
fn env_delivery_hides_values_and_refuses_clashes() {
    let Delivery::Env(vars) = plan(
        Some(&secrets(SecretDelivery::Env, "", &["DB_PASSWORD"])),
        "web",
        &["PORT=8080".into()],
        &[],
    )
    .unwrap() else {
        panic!("env expected")
    };
    assert_eq!(vars[0].expose_pair(), "DB_PASSWORD=hunter2-secret-value");
    assert_eq!(format!("{vars:?}"), "[DB_PASSWORD=***]");

    let e = plan(
        Some(&secrets(SecretDelivery::Env, "", &["PORT"])),
        "web",
        &["PORT=8080".into()],
        &[],
    )
    .unwrap_err();
    assert!(e.message.contains("PORT"), "{}", e.message);
    let mut binary = secrets(SecretDelivery::Env, "", &["CERT"]);
    binary.values[0].value = vec![0xff, 0x00, 0x68];
    let e = plan(Some(&binary), "web", &[], &[]).unwrap_err();
    assert!(e.message.contains("CERT") && e.message.contains("files"));
}

#[test]
fn bad_secrets_are_refused_by_name_without_values() {
    let mount = MountSpec {
        kind: MountType::Volume,
        source: "data".into(),
        target: "/data".into(),
        read_only: false,
    };
    let cases: Vec<(Secrets, &str)> = vec![
        (
            secrets(SecretDelivery::Files, "", &["1BAD"]),
            "invalid secret name \"1BAD\"",
        ),
        (
            secrets(SecretDelivery::Files, "", &["A-B"]),
            "invalid secret name \"A-B\"",
        ),
        (
            secrets(SecretDelivery::Files, "", &["A", "A"]),
            "sent twice",
        ),
        (
            secrets(SecretDelivery::Files, "relative", &["A"]),
            "absolute",
        ),
        (secrets(SecretDelivery::Files, "/", &["A"]), "root"),
        (secrets(SecretDelivery::Files, "/a/../b", &["A"]), ".."),
        (secrets(SecretDelivery::Files, "/data", &["A"]), "data"),
        (
            Secrets {
                delivery: 99,
                ..secrets(SecretDelivery::Files, "", &["A"])
            },
            "unknown secret delivery 99",
        ),
    ];
    for (s, needle) in cases {
        let e = plan(Some(&s), "web", &[], std::slice::from_ref(&mount)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }
    // No values, whatever the delivery: nothing to do.
    assert!(matches!(
        plan(
            Some(&secrets(SecretDelivery::Env, "", &[])),
            "web",
            &[],
            &[]
        ),
        Ok(Delivery::None)
    ));
    assert!(matches!(plan(None, "web", &[], &[]), Ok(Delivery::None)));
    assert!(check_name("_OK_1").is_ok());
}
