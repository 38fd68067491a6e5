//! The Kubernetes manifests, the Dockerfile (images cannot be built here) and the systemd unit:
//! every manifest parses and carries what running ringway as a node-level DaemonSet needs.

use serde_yaml::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The wait of the preStop hook: an exec of `ringway sleep N` (valid on every Kubernetes
/// version, and the distroless image has no shell).
fn pre_stop_seconds(ds: &Value) -> u64 {
    let hook = &ds["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"];
    assert!(
        hook.get("sleep").is_none(),
        "the sleep action needs Kubernetes 1.30+"
    );
    let cmd: Vec<&str> = hook["exec"]["command"]
        .as_sequence()
        .expect("an exec preStop hook")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd[..2], ["/usr/local/bin/ringway", "sleep"], "{cmd:?}");
    cmd[2].parse().unwrap()
}

fn dur_secs(v: &str) -> u64 {
    v.trim_end_matches('s').parse().unwrap()
}

#[test]
fn daemonset_runs_on_the_host_network_with_probes_on_the_admin_port() {
    let ds = load("daemonset.yaml");
    assert_eq!(ds["kind"], "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    let c = &spec["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let admin_port = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("an admin port");
    assert_eq!(admin_port["containerPort"], 9901);
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(pre_stop_seconds(&ds) > 0);
    // The config the pods mount is what ringway validates, and it matches the probes.
    let cm = &spec["volumes"][0]["configMap"]["name"];
    assert_eq!(cm, "ringway-config");
}

#[test]
fn grace_period_outlasts_the_drain() {
    let ds = load("daemonset.yaml");
    let spec = &ds["spec"]["template"]["spec"];
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop = pre_stop_seconds(&ds);
    let config = load("config.yaml");
    let drain = dur_secs(config["shutdown_timeout"].as_str().unwrap())
        + dur_secs(config["shutdown_delay"].as_str().unwrap());
    assert!(
        grace > drain + pre_stop,
        "grace {grace}s vs drain {drain}s + preStop {pre_stop}s"
    );
}

#[test]
fn security_context_is_non_root_and_allows_io_uring_through_the_shipped_profile() {
    let ds = load("daemonset.yaml");
    let sc = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["add"][0], "NET_BIND_SERVICE");
    assert_eq!(sc["seccompProfile"]["type"], "Localhost");
    let profile: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DIR}/seccomp-ringway.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let allowed: Vec<&str> = profile["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for needed in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "epoll_wait",
        "splice",
        "accept4",
    ] {
        assert!(
            allowed.contains(&needed),
            "{needed} is not allowed by the profile"
        );
    }
}

#[test]
fn shipped_kubernetes_config_is_valid_and_enables_the_admin_endpoint() {
    let text = std::fs::read_to_string(format!("{DIR}/config.yaml")).unwrap();
    let c = ringway::config::Config::parse(&text, "deploy/kubernetes/config.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.admin.map(|a| a.port()), Some(9901));
}

#[test]
fn kustomization_generates_a_hashed_config_map_for_rolling_reloads() {
    let k = load("kustomization.yaml");
    assert_eq!(k["configMapGenerator"][0]["name"], "ringway-config");
    let resources: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(resources.contains(&"daemonset.yaml"));
    assert_eq!(
        k["generatorOptions"]["disableNameSuffixHash"],
        Value::Null,
        "the hash suffix is what rolls pods"
    );
}

#[test]
fn daemonset_image_is_the_crate_version_and_it_schedules_as_an_edge_daemonset() {
    let ds = load("daemonset.yaml");
    let spec = &ds["spec"]["template"]["spec"];
    let image = spec["containers"][0]["image"].as_str().unwrap();
    assert_eq!(
        image.rsplit(':').next(),
        Some(env!("CARGO_PKG_VERSION")),
        "{image}"
    );
    // Every NoSchedule and NoExecute taint is tolerated.
    let tolerations = spec["tolerations"].as_sequence().unwrap();
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(
            tolerations.iter().any(|t| t["operator"] == "Exists"
                && t["effect"] == effect
                && t.get("key").is_none()),
            "{effect}"
        );
    }
    // The priority class is shipped with it and listed in the kustomization.
    let class = load("priorityclass.yaml");
    assert_eq!(class["kind"], "PriorityClass");
    assert_eq!(spec["priorityClassName"], class["metadata"]["name"]);
    assert!(
        class["value"].as_u64().unwrap() < 2_000_000_000,
        "below system-*-critical"
    );
    let k = load("kustomization.yaml");
    let resources: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(resources.contains(&"priorityclass.yaml"));
}

#[test]
fn namespace_enforces_the_pod_security_level_the_daemonset_needs() {
    let ns = load("namespace.yaml");
    let labels = &ns["metadata"]["labels"];
    // hostNetwork and hostPort are outside baseline: privileged is the honest level.
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    let ds = load("daemonset.yaml");
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true);
    for (k, v) in labels.as_mapping().unwrap() {
        let k = k.as_str().unwrap();
        if let Some(mode) = k.strip_prefix("pod-security.kubernetes.io/") {
            if !mode.ends_with("-version") {
                assert!(
                    ["privileged", "baseline", "restricted"].contains(&v.as_str().unwrap()),
                    "{k}: {v:?}"
                );
            }
        }
    }
}

#[test]
fn dockerfile_pins_base_images_by_digest_and_caches_dependencies() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    let mut stages: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("FROM ")) {
        let image = line.split_whitespace().nth(1).unwrap();
        if !stages.iter().any(|s| s == image) {
            let digest = image.split_once("@sha256:").map(|(_, d)| d).unwrap_or("");
            assert!(
                digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
                "{image} is not pinned by digest"
            );
        }
        if let Some((_, name)) = line.split_once(" AS ") {
            stages.push(name.trim().to_string());
        }
    }
    // Dependencies build from the manifest alone, before the sources are copied in.
    let deps_build = text.find("cargo build").unwrap();
    let copy_src = text.find("COPY src").unwrap();
    assert!(
        deps_build < copy_src,
        "no dependency stage before the sources"
    );
    assert!(text[..deps_build].contains("COPY Cargo.toml Cargo.lock"));
    // The build context is an allow-list: no target/, .git or local files.
    let ignore = std::fs::read_to_string(format!("{root}/.dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "{rules:?}");
    for copied in ["Cargo.toml", "Cargo.lock", "build.rs", "src/", "benches/"] {
        assert!(
            rules.contains(&format!("!{copied}").as_str()),
            "{copied} is not in the context"
        );
    }
}

#[test]
fn systemd_unit_verifies_and_reload_validates_before_sighup() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/deploy/systemd/ringway.service")).unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        values("ExecReload"),
        [
            "/usr/local/bin/ringway validate /etc/ringway/config.yaml",
            "/bin/kill -HUP $MAINPID"
        ]
    );
    assert_eq!(
        values("ExecStart"),
        ["/usr/local/bin/ringway --config /etc/ringway/config.yaml"]
    );
    // Stopping waits longer than the shipped config drains.
    let config = load("config.yaml");
    let drain = dur_secs(config["shutdown_timeout"].as_str().unwrap())
        + dur_secs(config["shutdown_delay"].as_str().unwrap());
    let stop: u64 = values("TimeoutStopSec")[0].parse().unwrap();
    assert!(stop > drain, "TimeoutStopSec {stop} vs drain {drain}");
    // systemd's own parser: unknown keys and bad values are reported, not silently ignored.
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        panic!("systemd-analyze (package systemd) is needed to check the unit; install it");
    };
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("ringway-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringway.service");
    // verify wants the binaries to exist: point it at the one just built.
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/ringway", env!("CARGO_BIN_EXE_ringway")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2);
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(text.contains("cap_net_bind_service"));
}

#[test]
fn headless_service_example_matches_the_dynamic_upstream_that_follows_it() {
    let svc = load("examples/headless-service.yaml");
    assert_eq!(svc["kind"], "Service");
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: DNS lists the pods"
    );
    let (name, ns) = (
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
    );
    let port = svc["spec"]["ports"][0]["port"].as_u64().unwrap();
    let path = format!("{DIR}/examples/config-dynamic.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = ringway::config::Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let d = c.upstreams[0].dynamic.as_ref().expect("a dynamic upstream");
    assert_eq!(
        d.a,
        Some((format!("{name}.{ns}.svc.cluster.local"), port as u16))
    );
    assert!(d.resolvers.is_empty(), "the pod's resolv.conf is used");
    assert!(c.upstreams[0].health.active.is_some());
    let ds = load("daemonset.yaml");
    assert_eq!(
        ds["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirstWithHostNet",
        "on the host network only this policy gives the cluster's resolver"
    );
}
