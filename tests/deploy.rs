//! The Kubernetes manifests and Dockerfile (images cannot be built here): every manifest
//! parses and carries what running ringway as a node-level DaemonSet needs.

use serde_yaml::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
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
    assert!(
        c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    // The config the pods mount is what ringway validates, and it matches the probes.
    let cm = &spec["volumes"][0]["configMap"]["name"];
    assert_eq!(cm, "ringway-config");
}

#[test]
fn grace_period_outlasts_the_drain() {
    let ds = load("daemonset.yaml");
    let spec = &ds["spec"]["template"]["spec"];
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
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
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
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
