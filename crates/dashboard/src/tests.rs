use super::*;

#[test]
fn daily_counts_by_day() {
    let now = 20 * DAY_MS + 5;
    let c = daily_counts(
        &[now, now - DAY_MS, now - 3 * DAY_MS, now + DAY_MS, 0],
        now,
        14,
    );
    assert_eq!(c.len(), 14);
    assert_eq!(&c[10..], &[1, 0, 1, 1]);
    assert_eq!(c.iter().sum::<u64>(), 3);
}

#[test]
fn utc() {
    assert_eq!(format_utc(0), "1970-01-01 00:00:00");
    assert_eq!(format_utc(951_782_400_999), "2000-02-29 00:00:00");
    assert_eq!(format_utc(1_700_000_000_123), "2023-11-14 22:13:20");
}

#[test]
fn file_names() {
    assert!(is_plain_file_name("boot-1.core"));
    for bad in ["", "..", ".hidden", "a/b", "..%2f", "a b", "%2e%2e", "a\\b"] {
        assert!(!is_plain_file_name(bad), "{bad}");
    }
}

#[test]
fn histogram() {
    let h = latency_histogram(&[1, 250, 251, 1_000, 10_000_000]);
    assert_eq!(h.len(), lazarus_api::LATENCY_BUCKETS.len() + 1);
    assert_eq!((h[0], h[1], h[2], h[h.len() - 1]), (2, 1, 1, 1));
}

fn dashboard(dir: &Path) -> Dashboard {
    let config = Config {
        data: DataDir::new(dir),
        vm_socks: vec![dir.join("nobody.sock")],
        vm_timeout: Duration::from_millis(500),
    };
    Dashboard::bind("127.0.0.1:0", config).expect("bind")
}

fn html(r: Reply) -> (u16, String) {
    match r.body {
        Body::Html(s) => (r.status, s),
        Body::File { name, .. } => panic!("a file {name}"),
    }
}

#[test]
fn bad_requests_are_clear_4xx_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dumps")).expect("mkdir");
    std::fs::write(dir.path().join("secret"), "no").expect("write");
    let d = dashboard(dir.path());
    for (method, url, status) in [
        ("POST", "/", 405),
        ("GET", "/nope", 404),
        ("GET", "/dumps/../secret", 400),
        ("GET", "/dumps/%2e%2e%2fsecret", 400),
        ("GET", "/dumps/", 400),
        ("GET", "/dumps/.x", 400),
        ("GET", "/dumps/gone.core", 404),
        ("GET", "/signature/<script>", 400),
        ("GET", "/signature/abc", 404),
        ("GET", "/signature/", 400),
    ] {
        let (s, body) = html(d.handle(method, url));
        assert_eq!(s, status, "{method} {url}: {body}");
        assert!(body.contains("id=\"error\""), "{body}");
        assert!(!body.contains("<script>"), "{body}");
    }
    let (_, body) = html(d.handle("GET", "/dumps/gone.core"));
    assert!(body.contains("pruned"), "{body}");
}

#[test]
fn a_symlink_out_of_the_dumps_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dumps")).expect("mkdir");
    std::fs::write(dir.path().join("secret"), "no").expect("write");
    std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("dumps/x.core"))
        .expect("symlink");
    std::fs::write(dir.path().join("dumps/y.core"), b"ELF").expect("write");
    let d = dashboard(dir.path());
    assert_eq!(d.handle("GET", "/dumps/x.core").status, 400);
    match d.handle("GET", "/dumps/y.core").body {
        Body::File { len, .. } => assert_eq!(len, 3),
        Body::Html(h) => panic!("{h}"),
    }
}

#[test]
fn empty_database_and_unreachable_vm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dashboard(dir.path());
    let (s, body) = html(d.handle("GET", "/"));
    assert_eq!(s, 200);
    assert!(body.contains("No crash is recorded"), "{body}");
    assert!(body.contains("Unreachable: "), "{body}");
    assert!(!dir.path().join("crashes.sqlite").exists());
    let (s, body) = html(d.handle("GET", "/vms"));
    assert_eq!(s, 200);
    assert!(body.contains("vm-unreachable"), "{body}");
}
