//! How `petald` treats its keys at start: no network key is a clear error (not a random
//! network), a key file every user may read is refused, `--new-network-key` prints a key. (The
//! node key in the data directory: `main.rs` unit tests and `lan.rs`, which restarts a node.)

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const PETALD: &str = env!("CARGO_BIN_EXE_petald");

fn petald(args: &[&str]) -> Output {
    Command::new(PETALD)
        .args(args)
        .env_remove("PETAL_NETWORK_KEY")
        .env_remove("RUST_LOG")
        .output()
        .expect("running petald")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn no_network_key_is_a_clear_error() {
    let o = petald(&["--no-discovery", "--port", "1", "--listen", "127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.starts_with("petald: no network key"), "{e}");
    assert!(e.contains("--new-network-key"), "{e}");
    assert!(!e.contains("backtrace"), "{e}");
}

#[test]
fn new_network_key_prints_64_hex_digits() {
    let o = petald(&["--new-network-key"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let k = out.trim_end();
    assert_eq!(k.len(), 64, "{out:?}");
    assert!(k.bytes().all(|b| b.is_ascii_hexdigit()), "{out:?}");
    let again = String::from_utf8(petald(&["--new-network-key"]).stdout).unwrap();
    assert_ne!(out, again, "two keys must differ");
}

#[test]
fn a_network_key_file_every_user_may_read_is_refused() {
    let dir = std::env::temp_dir().join(format!("petald-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("network.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = petald(&[
        "--network-key-file",
        key.to_str().unwrap(),
        "--no-discovery",
        "--port",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
