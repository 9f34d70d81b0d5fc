//! deploy/kubernetes: the kustomize base renders (`kubectl kustomize`),
//! passes the Kubernetes API schemas (`kubernetes-validate --strict`, offline),
//! and carries what medic needs: the configs in its ConfigMaps pass the
//! coordinator's and the agent's own checks, and the workloads mount, expose
//! and probe what those configs name. deploy/kubernetes-replicated, the
//! overlay with three coordinator replicas on etcd, and its fleet-init Job
//! are checked the same way, and for what replicas need: a file per replica
//! that advertises the pod's own name, agents that list every replica, the
//! etcd client certificate where `[store.tls]` points, and the fleet config
//! pushed before any replica starts.
//!
//! The shipped configs speak mutual TLS: their `[tls]` paths name files under
//! `/etc/medic/tls`, which the pods get from a Secret (the coordinator) or
//! the node (the agent); the replicas' `[store.tls]` paths name files under
//! `/etc/medic/etcd` (a Secret). Before a config is checked here, those
//! paths are pointed at a dev-certs set made for the test, laid out under
//! the same file names.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use medic_agent::AgentConfig;
use medic_coordinator::CoordinatorConfig;
use medic_coordinator::config::{EtcdSettings, FleetConfig, StoreConfig, TransportSecurity};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn base() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The overlay with replicated coordinators on etcd.
fn replicated() -> PathBuf {
    repo().join("deploy/kubernetes-replicated")
}

/// The overlay's one-off Job: the first push of the fleet config.
fn fleet_init() -> PathBuf {
    replicated().join("fleet-init")
}

// === rendering ===

fn kustomize() -> String {
    kustomize_dir(&base())
}

fn kustomize_dir(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl (scripts/test installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn yaml_to_json(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml\n\
             json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML (kubernetes-validate brings it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rendered() -> Vec<Value> {
    yaml_to_json(&kustomize())
}

fn rendered_dir(dir: &Path) -> Vec<Value> {
    yaml_to_json(&kustomize_dir(dir))
}

fn object<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn mount_path<'a>(c: &'a Value, volume: &str) -> Option<&'a str> {
    c["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn port(c: &Value, name: &str) -> u64 {
    c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port {name}"))
}

fn env_field<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn validate(file: &Path, version: &str) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .expect("kubernetes-validate (scripts/test installs it from PyPI)")
}

// === certificates ===

/// The node the agent tests render for; its agent certificate names it.
const NODE: &str = "node-a.example.internal";

/// A dev-certs set (`medic_coordinator::testing::dev_certs`) with the file
/// names the shipped configs use under `/etc/medic/tls`: `ca.pem`, the
/// coordinator's `server.pem`/`server.key`, and `node`'s agent certificate
/// as `agent.pem`/`agent.key` (its key kept at 0600, as the check wants).
/// The directory lives as long as the returned guard.
fn certificates(node: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = medic_coordinator::testing::dev_certs(dir.path(), &[node]);
    for ext in ["pem", "key"] {
        std::fs::copy(
            certs.join(format!("agents/{node}.{ext}")),
            certs.join(format!("agent.{ext}")),
        )
        .unwrap();
    }
    for key in ["server.key", "agent.key"] {
        let mode = std::fs::metadata(certs.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    (dir, certs)
}

/// `text` with its `/etc/medic/tls/` paths pointed at `certs`.
fn at_certs(text: &str, certs: &Path) -> String {
    assert!(text.contains("\"/etc/medic/tls/"), "no TLS paths to point");
    text.replace("\"/etc/medic/tls/", &format!("\"{}/", certs.display()))
}

/// The etcd client files of the replicas' `[store.tls]`, in `certs/etcd`
/// under the names the Secret medic-etcd-client has: `ca.pem` (here the
/// dev-certs CA, as etcd's server CA) and a client certificate signed by it
/// as `client.pem`/`client.key` (here `NODE`'s, key 0600).
fn etcd_certificates(certs: &Path) -> PathBuf {
    let etcd = certs.join("etcd");
    std::fs::create_dir(&etcd).unwrap();
    std::fs::copy(certs.join("ca.pem"), etcd.join("ca.pem")).unwrap();
    for ext in ["pem", "key"] {
        std::fs::copy(
            certs.join(format!("agents/{NODE}.{ext}")),
            etcd.join(format!("client.{ext}")),
        )
        .unwrap();
    }
    etcd
}

/// A replica's file with its `/etc/medic/tls/` paths pointed at `certs` and
/// its `/etc/medic/etcd/` paths at `etcd`.
fn at_replica_certs(text: &str, certs: &Path, etcd: &Path) -> String {
    assert!(
        text.contains("\"/etc/medic/etcd/"),
        "no etcd TLS paths to point"
    );
    at_certs(text, certs).replace("\"/etc/medic/etcd/", &format!("\"{}/", etcd.display()))
}

/// The Secret volume `name` gives its files a mode the key checks accept
/// for a root-owned file read through the pod's fsGroup: group-readable,
/// nothing for others, at most 0640. Returns it.
fn secret_mode(pod: &Value, name: &str) -> u32 {
    let fs_group = pod["securityContext"]["fsGroup"].as_u64().unwrap();
    assert_eq!(
        Some(fs_group),
        pod["securityContext"]["runAsGroup"].as_u64(),
        "the coordinator's group reads the Secret {name}"
    );
    let mode = volume(pod, name)["secret"]["defaultMode"]
        .as_u64()
        .map(|m| u32::try_from(m).unwrap())
        .unwrap();
    assert_eq!(mode, 0o440, "{name}");
    assert_eq!(mode & 0o040, 0o040, "{name}: group-readable");
    assert_eq!(mode & 0o137, 0, "{name}: {mode:o}: wider than 0640");
    mode
}

// === the coordinator ===

#[test]
fn coordinator_config_passes_the_coordinator_check_with_tls() {
    let shipped = std::fs::read_to_string(base().join("coordinator.toml")).unwrap();
    let (_guard, certs) = certificates(NODE);
    let c =
        CoordinatorConfig::from_toml(&at_certs(&shipped, &certs)).unwrap_or_else(|e| panic!("{e}"));

    // Mutual TLS, so listening on every interface is allowed as is.
    assert_eq!(c.transport_security(), TransportSecurity::MutualTls);
    assert!(!shipped.contains("insecure = true"));

    // What the manifests rely on.
    assert_eq!(c.server.state_dir, Path::new("/var/lib/medic"));
    assert!(shipped.contains("listen = \"0.0.0.0:7470\""));
    assert!(shipped.contains("metrics_listen = \"0.0.0.0:7471\""));
    assert_eq!(c.server.listen.port(), 7470);
    assert_eq!(c.server.metrics_listen.port(), 7471);
    assert!(
        shipped.contains("mode = \"dry-run\""),
        "roll out in dry-run"
    );
    assert!(
        c.server.shutdown_grace.as_secs() < 30,
        "terminationGracePeriodSeconds is 30"
    );
}

#[test]
fn coordinator_statefulset_mounts_probes_and_exposes_what_its_config_names() {
    let docs = rendered();
    let config = std::fs::read_to_string(base().join("coordinator.toml")).unwrap();
    let (_guard, certs) = certificates(NODE);
    let c =
        CoordinatorConfig::from_toml(&at_certs(&config, &certs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.transport_security(), TransportSecurity::MutualTls);

    let sts = object(&docs, "StatefulSet", "medic-coordinator");
    assert_eq!(
        sts["spec"]["replicas"], 1,
        "one replica on the embedded store; replicas: deploy/kubernetes-replicated"
    );
    let pod = &sts["spec"]["template"]["spec"];
    let main = container(pod, "coordinator");

    // The state volume is the config's state_dir, kept when deleted.
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(
        mount_path(main, claim["metadata"]["name"].as_str().unwrap()),
        c.server.state_dir.to_str()
    );
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );

    // The ConfigMap holds this very file, and the container reads it there.
    let cm = object(&docs, "ConfigMap", "medic-coordinator-config");
    assert_eq!(cm["data"]["coordinator.toml"].as_str().unwrap(), config);
    assert_eq!(
        volume(pod, "config")["configMap"]["name"],
        cm["metadata"]["name"]
    );
    let args: Vec<&str> = main["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = format!("{}/coordinator.toml", mount_path(main, "config").unwrap());
    assert_eq!(
        args,
        ["run", "--config", &config_path, "--log-format", "json"]
    );

    // Ports are the config's; probes hit /healthz on the metrics port.
    assert_eq!(port(main, "grpc"), u64::from(c.server.listen.port()));
    assert_eq!(
        port(main, "metrics"),
        u64::from(c.server.metrics_listen.port())
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(main[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(main[probe]["httpGet"]["port"], "metrics", "{probe}");
    }

    // TLS material where the [tls] block points.
    let tls = mount_path(main, "tls").unwrap();
    assert_eq!(tls, "/etc/medic/tls");
    assert_eq!(
        volume(pod, "tls")["secret"]["secretName"],
        "medic-coordinator-tls"
    );
    for file in ["server.pem", "server.key", "ca.pem"] {
        assert!(config.contains(&format!("{tls}/{file}")), "{file}");
    }
    // The Secret's files are root-owned; with the pod's fsGroup they are
    // group-readable by the coordinator's group. The key check accepts a
    // root-owned key that is at most group-readable (0640 or stricter), so
    // defaultMode must give the group read, and nothing to others.
    let default_mode = secret_mode(pod, "tls");
    {
        // As the kubelet writes it: owned by root, mode defaultMode. The
        // real check, where the test runs as root and can make such a file.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let key = certs.join("server.key");
        if std::fs::metadata(&key).unwrap().uid() == 0 {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(default_mode)).unwrap();
            medic_proto::secret_file::check(&key).unwrap();
            CoordinatorConfig::from_toml(&at_certs(&config, &certs))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    // Unprivileged.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(main["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(main["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(main["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(main["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(
        c.server.shutdown_grace.as_secs() < pod["terminationGracePeriodSeconds"].as_u64().unwrap()
    );

    // The Service and the PodDisruptionBudget select these pods.
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    let svc = object(&docs, "Service", "medic-coordinator");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selector {k}");
    }
    let svc_ports: Vec<u64> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(svc_ports.contains(&u64::from(c.server.listen.port())));
    let pdb = object(&docs, "PodDisruptionBudget", "medic-coordinator");
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "PDB selector {k}");
    }
    let headless = object(&docs, "Service", "medic-coordinator-pods");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(sts["spec"]["serviceName"], "medic-coordinator-pods");
}

// === the agent ===

fn node_json(dir: &Path, labels: &str) -> PathBuf {
    let path = dir.join("node.json");
    std::fs::write(
        &path,
        format!(r#"{{"kind":"Node","metadata":{{"name":"{NODE}","labels":{{{labels}}}}}}}"#),
    )
    .unwrap();
    path
}

/// Runs the init container's renderer on `template`; the rendered file's
/// path, and the renderer's output (it ends with `medic-agent check-config`).
fn render_agent(
    template: &str,
    labels: &str,
    mapping: &str,
) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("template.toml");
    std::fs::write(&tpl, template).unwrap();
    let out = Command::new(repo().join("deploy/container/medic-render-agent-config"))
        .env("NODE_NAME", NODE)
        .env("MEDIC_NODE_LABELS", mapping)
        .env("MEDIC_CONFIG_TEMPLATE", &tpl)
        .env("MEDIC_CONFIG_OUT", dir.path().join("agent.toml"))
        .env("MEDIC_NODE_JSON", node_json(dir.path(), labels))
        .env("MEDIC_AGENT", env!("CARGO_BIN_EXE_medic-agent"))
        .output()
        .expect("sh and jq (scripts/test installs jq)");
    (dir, out)
}

fn daemonset_label_mapping(docs: &[Value]) -> String {
    let ds = object(docs, "DaemonSet", "medic-agent");
    let init = container(&ds["spec"]["template"]["spec"], "render-config");
    init["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MEDIC_NODE_LABELS")
        .and_then(|e| e["value"].as_str())
        .unwrap()
        .to_owned()
}

#[test]
fn agent_config_renders_per_node_and_passes_check_config_with_tls() {
    let docs = rendered();
    let mapping = daemonset_label_mapping(&docs);
    let template = std::fs::read_to_string(base().join("agent.toml")).unwrap();
    assert!(template.contains("\n[tls]\n"));
    let node_labels = r#""topology.kubernetes.io/zone":"use1-az2","topology.kubernetes.io/region":"us-east-1","kubernetes.io/hostname":"node-a""#;

    // With this node's certificate where [tls] points, check-config (the
    // renderer's last step) passes: the certificate names host_id, the key
    // is private.
    let (_guard, certs) = certificates(NODE);
    let (dir, out) = render_agent(&at_certs(&template, &certs), node_labels, &mapping);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok: host node-a.example.internal"));
    let text = std::fs::read_to_string(dir.path().join("agent.toml")).unwrap();
    let agent = AgentConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(agent.host_id.to_string(), NODE);
    let labels: Vec<(String, String)> = agent.labels.clone().into_iter().collect();
    assert_eq!(
        labels,
        [
            ("region".to_owned(), "us-east-1".to_owned()),
            ("zone".to_owned(), "use1-az2".to_owned())
        ],
        "only the mapped labels"
    );
    assert_eq!(
        agent.coordinators,
        ["https://medic-coordinator.medic.svc:7470"]
    );

    // Another node's certificate is refused: the identity binding holds
    // through the renderer.
    let (_other_guard, other) = certificates("node-b.example.internal");
    let (_dir, out) = render_agent(&at_certs(&template, &other), node_labels, &mapping);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tls.cert: ") && stderr.contains("does not name this host"),
        "{stderr}"
    );
}

#[test]
fn agent_renderer_refuses_host_id_in_the_template_and_skips_missing_labels() {
    let (_d, out) = render_agent(
        "host_id = \"x\"\n[[jobs]]\nname = \"a\"\n[jobs.probe]\ncommand = [\"true\"]\n",
        "",
        "zone=topology.kubernetes.io/zone",
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host_id or [labels]"));

    let (dir, out) = render_agent(
        "[[jobs]]\nname = \"a\"\nrestart.command = [\"true\"]\n[jobs.probe]\ncommand = [\"true\"]\n",
        r#""topology.kubernetes.io/zone":"z1""#,
        "zone=topology.kubernetes.io/zone rack=example.net/rack",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no label example.net/rack"));
    let agent =
        AgentConfig::from_toml(&std::fs::read_to_string(dir.path().join("agent.toml")).unwrap())
            .unwrap();
    assert_eq!(agent.labels.get("zone").map(String::as_str), Some("z1"));
    assert!(!agent.labels.contains_key("rack"));
}

#[test]
fn agent_daemonset_has_the_host_access_it_needs_and_no_more() {
    let docs = rendered();
    let template = std::fs::read_to_string(base().join("agent.toml")).unwrap();
    let ds = object(&docs, "DaemonSet", "medic-agent");
    let pod = &ds["spec"]["template"]["spec"];
    let agent = container(pod, "agent");
    let init = container(pod, "render-config");

    // The host's processes; a node name from the downward API.
    assert_eq!(pod["hostPID"], true);
    assert!(pod["hostNetwork"].is_null() && pod["hostIPC"].is_null());
    let node_name = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .unwrap();
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    // Root, not privileged, every capability dropped but KILL.
    let sc = &agent["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], serde_json::json!(["KILL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["appArmorProfile"]["type"], "Unconfined");
    let env = agent["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "SYSTEMD_IGNORE_CHROOT" && e["value"] == "1")
    );

    // The init container runs unprivileged and alone holds the API token.
    assert_eq!(init["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(mount_path(init, "api-token").is_some());
    assert!(mount_path(agent, "api-token").is_none());
    let role = object(&docs, "ClusterRole", "medic-agent-read-nodes");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}])
    );

    // What agent.toml names is there: the state on the host, the metrics
    // port, systemd's socket directory, the rendered file.
    let (_guard, certs) = certificates(NODE);
    let cfg = AgentConfig::from_toml(&format!(
        "host_id = \"{NODE}\"\n{}",
        at_certs(&template, &certs)
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mount_path(agent, "state"), cfg.state_dir.to_str());
    assert_eq!(
        volume(pod, "state")["hostPath"]["path"],
        "/var/lib/medic-agent"
    );
    assert_eq!(
        port(agent, "metrics"),
        u64::from(cfg.metrics_listen.unwrap().port())
    );
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(mount_path(agent, "systemd"), Some("/run/systemd"));
    assert_eq!(cfg.reboot_command, ["systemctl", "reboot"]);
    let rendered_at = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MEDIC_CONFIG_OUT")
        .and_then(|e| e["value"].as_str())
        .unwrap();
    assert_eq!(
        format!("{}/agent.toml", mount_path(agent, "config").unwrap()),
        rendered_at
    );
    assert!(
        agent["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == rendered_at)
    );
    let cm = object(&docs, "ConfigMap", "medic-agent-config");
    assert_eq!(cm["data"]["agent.toml"].as_str().unwrap(), template);
    assert_eq!(
        volume(pod, "template")["configMap"]["name"],
        cm["metadata"]["name"]
    );

    // The node's certificate directory, where the [tls] block points.
    assert_eq!(mount_path(agent, "tls"), Some("/etc/medic/tls"));
    for file in ["ca.pem", "agent.pem", "agent.key"] {
        assert!(
            template.contains(&format!("/etc/medic/tls/{file}")),
            "{file}"
        );
    }
}

// === the schema ===

/// Every document of `yaml` passes the API schemas, strictly (no unknown
/// fields), offline.
fn assert_schemas_pass(yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medic.yaml");
    std::fs::write(&file, yaml).unwrap();
    // The oldest release with securityContext.appArmorProfile, and the newest
    // the validator knows.
    for version in ["1.30.0", "1.37.0"] {
        let out = validate(&file, version);
        assert!(
            out.status.success(),
            "Kubernetes {version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn rendered_manifests_pass_the_kubernetes_schemas() {
    assert_schemas_pass(&kustomize());
    let kinds: Vec<String> = rendered()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in [
        "Namespace",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "DaemonSet",
        "ConfigMap",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}");
    }
}

#[test]
fn the_schema_check_catches_a_misspelt_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medic.yaml");
    std::fs::write(
        &file,
        kustomize().replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
    )
    .unwrap();
    assert!(!validate(&file, "1.37.0").status.success());
}

// === replicated coordinators on etcd (deploy/kubernetes-replicated) ===

/// The object of `kind` named exactly `name`, if the render has one.
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// Each replica's pod name and its file, as the overlay's ConfigMap holds
/// them: one file per pod of the StatefulSet, named after the pod, and
/// nothing else.
fn replica_files(docs: &[Value]) -> Vec<(String, String)> {
    let sts = object(docs, "StatefulSet", "medic-coordinator");
    let name = sts["metadata"]["name"].as_str().unwrap();
    let pods: Vec<String> = (0..sts["spec"]["replicas"].as_u64().unwrap())
        .map(|i| format!("{name}-{i}"))
        .collect();
    let cm = named(docs, "ConfigMap", "medic-coordinator-config").unwrap();
    let data = cm["data"].as_object().unwrap();
    let mut files: Vec<&str> = data.keys().map(String::as_str).collect();
    files.sort_unstable();
    let expected: Vec<String> = pods.iter().map(|p| format!("{p}.toml")).collect();
    assert_eq!(files, expected, "one file per replica");
    pods.into_iter()
        .map(|p| {
            let text = data[&format!("{p}.toml")].as_str().unwrap().to_owned();
            (p, text)
        })
        .collect()
}

/// A replica's file, checked by the coordinator's own parser with the test's
/// certificates where `[tls]` and `[store.tls]` point; and its `[store]`.
fn replica_config(text: &str, certs: &Path, etcd: &Path) -> (CoordinatorConfig, EtcdSettings) {
    let c = CoordinatorConfig::from_toml(&at_replica_certs(text, certs, etcd))
        .unwrap_or_else(|e| panic!("{e}"));
    let StoreConfig::Etcd(store) = c.store.clone() else {
        panic!("not on etcd: {:?}", c.store)
    };
    (c, store)
}

#[test]
fn replicated_files_put_each_replica_on_etcd_advertising_its_own_pod() {
    let docs = rendered_dir(&replicated());
    let sts = object(&docs, "StatefulSet", "medic-coordinator");
    assert_eq!(sts["spec"]["replicas"], 3);
    let files = replica_files(&docs);
    let namespace = sts["metadata"]["namespace"].as_str().unwrap();
    let service = sts["spec"]["serviceName"].as_str().unwrap();

    let (_guard, certs) = certificates(NODE);
    let etcd = etcd_certificates(&certs);
    let base_text = std::fs::read_to_string(base().join("coordinator.toml")).unwrap();
    let base_cfg = CoordinatorConfig::from_toml(&at_certs(&base_text, &certs))
        .unwrap_or_else(|e| panic!("{e}"));

    let (first_pod, first_text) = &files[0];
    for (pod, text) in &files {
        // The ConfigMap holds the overlay's file as is, and the files are
        // the same but for the replica's own name.
        let file = replicated().join(format!("{pod}.toml"));
        assert_eq!(&std::fs::read_to_string(file).unwrap(), text, "{pod}");
        assert_eq!(
            &text.replace(pod.as_str(), first_pod),
            first_text,
            "{pod}: differs from {first_pod} in more than its name"
        );

        // The real parser: a replica's file (fleet-wide sections would be
        // refused), mutual TLS, on etcd.
        let (c, store) = replica_config(text, &certs, &etcd);
        assert!(text.contains("kind = \"etcd\""));
        assert_eq!(c.transport_security(), TransportSecurity::MutualTls);
        assert!(!text.contains("insecure = true"));

        // It advertises its own pod's name under the governing Service,
        // on its gRPC port.
        assert_eq!(
            store.advertise,
            format!(
                "https://{pod}.{service}.{namespace}.svc:{}",
                c.server.listen.port()
            )
        );

        // etcd over TLS with a client certificate, from /etc/medic/etcd.
        assert!(!store.endpoints.is_empty());
        for e in &store.endpoints {
            assert!(e.starts_with("https://"), "{pod}: {e}");
        }
        assert_eq!(store.prefix, "/medic");
        let tls = store.tls.as_ref().expect("[store.tls]");
        assert_eq!(tls.ca, etcd.join("ca.pem"));
        assert_eq!(tls.cert.as_deref(), Some(etcd.join("client.pem").as_path()));
        assert_eq!(tls.key.as_deref(), Some(etcd.join("client.key").as_path()));
        for file in ["ca.pem", "client.pem", "client.key"] {
            assert!(
                text.contains(&format!("\"/etc/medic/etcd/{file}\"")),
                "{pod}: {file}"
            );
        }

        // Its [server], [tls] and [auth] are the base's.
        assert_eq!(c.server, base_cfg.server, "{pod}");
        assert_eq!(c.tls, base_cfg.tls, "{pod}");
        assert_eq!(c.auth, base_cfg.auth, "{pod}");
    }
}

#[test]
fn replicated_statefulset_runs_three_replicas_with_what_their_files_name() {
    let docs = rendered_dir(&replicated());
    let sts = object(&docs, "StatefulSet", "medic-coordinator");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let pod = &sts["spec"]["template"]["spec"];
    let main = container(pod, "coordinator");
    let files = replica_files(&docs);
    let (_guard, certs) = certificates(NODE);
    let etcd = etcd_certificates(&certs);
    let (c, _) = replica_config(&files[0].1, &certs, &etcd);

    // No state volume: the state is in etcd.
    assert!(sts["spec"]["volumeClaimTemplates"].is_null());
    assert!(sts["spec"]["persistentVolumeClaimRetentionPolicy"].is_null());
    for m in main["volumeMounts"].as_array().unwrap() {
        assert_ne!(m["mountPath"], "/var/lib/medic");
        volume(pod, m["name"].as_str().unwrap());
    }

    // Each pod reads the file named after it (the kubelet expands
    // $(POD_NAME) from the downward API).
    let config_dir = mount_path(main, "config").unwrap();
    let own_file = format!("{config_dir}/$(POD_NAME).toml");
    assert_eq!(
        strings(&main["args"]),
        ["run", "--config", &own_file, "--log-format", "json"]
    );
    assert_eq!(
        env_field(main, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        volume(pod, "config")["configMap"]["name"],
        "medic-coordinator-config"
    );

    // The etcd client certificate where every file's [store.tls] points,
    // and the server certificate where [tls] points, both readable as the
    // key checks want.
    let etcd_dir = mount_path(main, "etcd-tls").unwrap();
    assert_eq!(etcd_dir, "/etc/medic/etcd");
    assert_eq!(
        volume(pod, "etcd-tls")["secret"]["secretName"],
        "medic-etcd-client"
    );
    for (pod_name, text) in &files {
        for file in ["ca.pem", "client.pem", "client.key"] {
            assert!(
                text.contains(&format!("\"{etcd_dir}/{file}\"")),
                "{pod_name}: {file}"
            );
        }
    }
    let tls_dir = mount_path(main, "tls").unwrap();
    assert_eq!(tls_dir, "/etc/medic/tls");
    secret_mode(pod, "tls");
    let mode = secret_mode(pod, "etcd-tls");
    {
        // As the kubelet writes it: owned by root, mode defaultMode. The
        // real check, where the test runs as root and can make such a file.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let key = etcd.join("client.key");
        if std::fs::metadata(&key).unwrap().uid() == 0 {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            medic_proto::secret_file::check(&key).unwrap();
            replica_config(&files[0].1, &certs, &etcd);
        }
    }

    // The pods start only once the deployment's state exists in etcd (the
    // first push creates it): the init container reads the pod's own file
    // with the same etcd files.
    let init = container(pod, "wait-for-fleet-config");
    assert_eq!(
        strings(&init["args"]),
        ["config", "show", "--config", &own_file]
    );
    assert_eq!(
        env_field(init, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(mount_path(init, "config"), Some(config_dir));
    assert_eq!(mount_path(init, "etcd-tls"), Some(etcd_dir));
    assert_eq!(init["image"], main["image"]);
    assert_eq!(init["securityContext"], main["securityContext"]);

    // The fleet config, for a push from a pod.
    assert_eq!(
        volume(pod, "fleet")["configMap"]["name"],
        "medic-fleet-config"
    );
    assert!(mount_path(main, "fleet").is_some());

    // Ports and probes as in the base.
    assert_eq!(port(main, "grpc"), u64::from(c.server.listen.port()));
    assert_eq!(
        port(main, "metrics"),
        u64::from(c.server.metrics_listen.port())
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(main[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(main[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert!(
        c.server.shutdown_grace.as_secs() < pod["terminationGracePeriodSeconds"].as_u64().unwrap()
    );

    // Unprivileged, as the base.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(main["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(main["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(main["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(pod["automountServiceAccountToken"], false);

    // Never two replicas on one node.
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(anti[0]["topologyKey"], "kubernetes.io/hostname");
    for (k, v) in anti[0]["labelSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "anti-affinity selector {k}");
    }

    // Each replica's name (its advertise) comes from the governing
    // headless Service, which lists not-ready pods too and carries the
    // metrics port for Prometheus.
    let headless = named(
        &docs,
        "Service",
        sts["spec"]["serviceName"].as_str().unwrap(),
    )
    .expect("the StatefulSet's governing Service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    for (k, v) in headless["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selector {k}");
    }
    let svc_ports: Vec<u64> = headless["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(svc_ports.contains(&u64::from(c.server.listen.port())));
    assert!(svc_ports.contains(&u64::from(c.server.metrics_listen.port())));
    // No load-balanced Service: agents list every replica.
    assert!(named(&docs, "Service", "medic-coordinator").is_none());

    // Voluntary disruptions take one replica at a time: a leader and a
    // spare stay.
    let pdb = named(&docs, "PodDisruptionBudget", "medic-coordinator").unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"]["minAvailable"].is_null());
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "PDB selector {k}");
    }
}

#[test]
fn replicated_agents_list_every_replica_as_it_advertises_itself() {
    let docs = rendered_dir(&replicated());
    let template = std::fs::read_to_string(replicated().join("agent.toml")).unwrap();
    let cm = object(&docs, "ConfigMap", "medic-agent-config");
    assert_eq!(cm["data"]["agent.toml"].as_str().unwrap(), template);
    let ds = object(&docs, "DaemonSet", "medic-agent");
    assert_eq!(
        volume(&ds["spec"]["template"]["spec"], "template")["configMap"]["name"],
        cm["metadata"]["name"]
    );

    let (_guard, certs) = certificates(NODE);
    let etcd = etcd_certificates(&certs);
    let advertised: Vec<String> = replica_files(&docs)
        .iter()
        .map(|(_, text)| replica_config(text, &certs, &etcd).1.advertise)
        .collect();
    assert_eq!(advertised.len(), 3);

    // Rendered for a node, it passes check-config and lists every replica,
    // each exactly as it advertises itself.
    let mapping = daemonset_label_mapping(&docs);
    let (dir, out) = render_agent(
        &at_certs(&template, &certs),
        r#""topology.kubernetes.io/zone":"use1-az2""#,
        &mapping,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent =
        AgentConfig::from_toml(&std::fs::read_to_string(dir.path().join("agent.toml")).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(agent.coordinators, advertised);

    // Everything else is the base's.
    let parse = |text: &str| {
        AgentConfig::from_toml(&format!("host_id = \"{NODE}\"\n{}", at_certs(text, &certs)))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let base_agent = parse(&std::fs::read_to_string(base().join("agent.toml")).unwrap());
    let mut ours = parse(&template);
    assert_ne!(ours.coordinators, base_agent.coordinators);
    ours.coordinators.clone_from(&base_agent.coordinators);
    assert_eq!(ours, base_agent);
}

#[test]
fn replicated_fleet_config_is_the_bases_limits_in_dry_run() {
    let docs = rendered_dir(&replicated());
    let text = std::fs::read_to_string(replicated().join("fleet.toml")).unwrap();
    // A stable name: the replicas and the fleet-init Job mount it.
    let cm = named(&docs, "ConfigMap", "medic-fleet-config").unwrap();
    assert_eq!(cm["data"]["fleet.toml"].as_str().unwrap(), text);

    // What `medic-coordinator config check` and `config push` accept: only
    // the fleet-wide sections.
    let fleet = FleetConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(fleet.policy.dry_run, "roll out in dry-run");

    // The base's limits, audit and notifications, moved to etcd.
    let (_guard, certs) = certificates(NODE);
    let base_text = std::fs::read_to_string(base().join("coordinator.toml")).unwrap();
    let base_cfg = CoordinatorConfig::from_toml(&at_certs(&base_text, &certs))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fleet.policy, base_cfg.policy);
    assert_eq!(fleet.audit, base_cfg.audit);
    assert_eq!(fleet.notify, base_cfg.notify);
}

#[test]
fn fleet_init_job_pushes_the_fleet_config_only_into_a_new_deployment() {
    let overlay = rendered_dir(&replicated());
    let docs = rendered_dir(&fleet_init());
    assert_eq!(docs.len(), 1, "the Job alone; the rest is the overlay's");
    let job = named(&docs, "Job", "medic-fleet-config-init").unwrap();
    let sts = object(&overlay, "StatefulSet", "medic-coordinator");
    assert_eq!(job["metadata"]["namespace"], sts["metadata"]["namespace"]);
    let pod = &job["spec"]["template"]["spec"];
    let sts_pod = &sts["spec"]["template"]["spec"];
    let replica = container(sts_pod, "coordinator");
    let push = container(pod, "push");
    assert_eq!(push["image"], replica["image"]);

    // `config push --init --expect-revision 0`: creates the deployment's
    // state (which the replicas wait for) and stores the fleet config only
    // if none was ever pushed.
    let args = strings(&push["args"]);
    assert_eq!(
        args[..6],
        [
            "config",
            "push",
            "--init",
            "--expect-revision",
            "0",
            "--config"
        ]
    );
    assert_eq!(args.len(), 8, "{args:?}");
    // A replica's file from the overlay's ConfigMap, for its [store] ...
    let config_dir = mount_path(push, "config").unwrap();
    let file = args[6]
        .strip_prefix(&format!("{config_dir}/"))
        .unwrap_or_else(|| panic!("{} is not in {config_dir}", args[6]));
    assert!(
        replica_files(&overlay)
            .iter()
            .any(|(p, _)| format!("{p}.toml") == file),
        "{file} is no replica's file"
    );
    // ... and the fleet config from its ConfigMap.
    assert_eq!(
        args[7],
        format!("{}/fleet.toml", mount_path(push, "fleet").unwrap())
    );

    // The overlay's ConfigMaps and etcd Secret, where the replicas have
    // them, so that the file's [store.tls] paths name the same files.
    for name in ["config", "fleet", "etcd-tls"] {
        assert_eq!(volume(pod, name), volume(sts_pod, name), "{name}");
        assert_eq!(mount_path(push, name), mount_path(replica, name), "{name}");
    }
    secret_mode(pod, "etcd-tls");
    for (kind, name) in [
        (
            "ConfigMap",
            volume(pod, "config")["configMap"]["name"].as_str(),
        ),
        (
            "ConfigMap",
            volume(pod, "fleet")["configMap"]["name"].as_str(),
        ),
        ("ServiceAccount", pod["serviceAccountName"].as_str()),
    ] {
        assert!(
            named(&overlay, kind, name.unwrap()).is_some(),
            "the overlay has no {kind} {name:?}"
        );
    }

    // Once, unprivileged, without an API token.
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(push["securityContext"], replica["securityContext"]);
}

#[test]
fn replicated_manifests_pass_the_kubernetes_schemas() {
    assert_schemas_pass(&kustomize_dir(&replicated()));
    assert_schemas_pass(&kustomize_dir(&fleet_init()));
}
