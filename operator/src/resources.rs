//! Desired objects: what a `PushCluster` (and its `Channel`s) should look like in
//! the cluster. Pure functions of the custom resources, so every rule here is unit
//! tested without an API server; the controllers only apply what these return.

use std::collections::BTreeMap;

use herald_contract::channels::{legacy_defaults, ChannelConfig, ChannelFile, RateLimit};
use herald_contract::settings;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{Channel, PushCluster, SecretKey};
use crate::left_out::left_out;

/// Port the node listens on inside the pod.
pub const NODE_PORT: i32 = 8080;
/// Where the node reads its channel file.
pub const CHANNELS_PATH: &str = "/etc/herald/channels.json";
/// The ConfigMap key holding the channel file.
pub const CHANNELS_KEY: &str = "channels.json";

/// Names of the objects owned by one PushCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Deployment, Service, ServiceAccount and PDB name.
    pub node: String,
    /// ConfigMap name.
    pub config: String,
    /// Ingress name.
    pub ingress: String,
}

/// The longest PushCluster name: `<name>-node` names a Service, a DNS label of at most
/// 63 characters. The CRD refuses longer names (a CEL rule on `metadata.name`).
pub const MAX_CLUSTER_NAME: usize = 58;

/// The names for `cluster`.
pub fn names(cluster: &PushCluster) -> Names {
    let base = cluster.name_any();
    Names {
        node: format!("{base}-node"),
        config: format!("{base}-node-config"),
        ingress: base,
    }
}

/// Labels selecting a cluster's node pods.
pub fn selector_labels(cluster: &PushCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "herald-node".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), cluster.name_any()),
    ])
}

/// The same labels as a `kubectl`-style selector string.
pub fn selector_string(cluster: &PushCluster) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(cluster: &PushCluster) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "herald-operator".into(),
    );
    labels.insert("herald.dev/cluster".into(), cluster.name_any());
    labels
}

fn owner(cluster: &PushCluster) -> OwnerReference {
    cluster
        .controller_owner_ref(&())
        .expect("a stored PushCluster has a name and uid")
}

fn meta(cluster: &PushCluster, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: cluster.namespace(),
        labels: Some(labels(cluster)),
        owner_references: Some(vec![owner(cluster)]),
        ..ObjectMeta::default()
    }
}

/// The node's settings as environment variables (secrets excluded).
pub fn node_settings(cluster: &PushCluster) -> BTreeMap<String, String> {
    let spec = &cluster.spec;
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set(settings::LISTEN, format!("0.0.0.0:{NODE_PORT}"));
    set(settings::CHANNELS, CHANNELS_PATH.into());
    set(settings::LOG_FORMAT, "json".into());
    set(settings::USER_CLAIM, spec.auth.user_claim.clone());
    set(settings::ROLE_CLAIM, spec.auth.role_claim.clone());
    if let Some(issuer) = &spec.auth.issuer {
        set(settings::JWT_ISSUER, issuer.clone());
    }
    if let Some(audience) = &spec.auth.audience {
        set(settings::JWT_AUDIENCE, audience.clone());
    }
    set(
        settings::INBOUND_RATE,
        spec.limits.inbound_per_second.to_string(),
    );
    set(
        settings::INBOUND_BURST,
        spec.limits.inbound_burst.to_string(),
    );
    set(
        settings::MAX_CONNECTIONS_PER_USER,
        spec.limits.max_connections_per_user.to_string(),
    );
    set(
        settings::MAX_MESSAGE_BYTES,
        spec.limits.max_message_bytes.to_string(),
    );
    set(settings::DRAIN_WINDOW, format!("{}s", spec.drain_seconds));
    if spec.redis.url_secret_ref.is_none() && !spec.redis.addresses.is_empty() {
        set(settings::REDIS_URL, redis_url(&spec.redis.addresses));
    }
    if let Some(min) = spec.redis.min_replicas {
        set(settings::REDIS_MIN_REPLICAS, min.to_string());
    }
    if let Some(telemetry) = &spec.telemetry {
        set(settings::OTLP_ENDPOINT, telemetry.otlp_endpoint.clone());
        set(
            settings::TRACE_SAMPLE_RATIO,
            telemetry.sample_ratio.to_string(),
        );
    }
    if spec.auth.public_keys_secret_ref.is_some() {
        set(
            settings::JWT_PUBLIC_KEY_FILE,
            "/etc/herald/keys/public.pem".into(),
        );
    }
    env
}

/// A cluster URL in the form the node's Redis client understands.
pub fn redis_url(addresses: &[String]) -> String {
    let mut url = format!("redis-cluster://{}", addresses[0]);
    for (i, address) in addresses.iter().enumerate().skip(1) {
        url.push(if i == 1 { '?' } else { '&' });
        url.push_str("node=");
        url.push_str(address);
    }
    url
}

/// The channel file for `cluster`: legacy defaults (when enabled) overridden by the
/// cluster's `Channel`s, sorted by name; Channels nodes would refuse are left out
/// (see [`left_out`]).
pub fn channel_file(cluster: &PushCluster, channels: &[Channel]) -> ChannelFile {
    let refused = left_out(cluster, channels);
    let defaults = &cluster.spec.channel_defaults;
    let mut by_name: BTreeMap<String, ChannelConfig> = BTreeMap::new();
    if cluster.spec.default_channels {
        for channel in legacy_defaults() {
            let channel = ChannelConfig {
                capacity: defaults.capacity,
                expiry_secs: defaults.expiry_seconds,
                ..channel
            };
            by_name.insert(channel.name.clone(), channel);
        }
    }
    for channel in channels {
        let spec = &channel.spec;
        let name = channel.channel_name();
        if refused.contains_key(&name) {
            continue;
        }
        let entry = ChannelConfig {
            name: name.clone(),
            access: spec.access.into(),
            roles: spec.roles.clone(),
            auto_subscribe: spec.auto_subscribe,
            allowed_types: spec.allowed_types.clone(),
            history: spec.history,
            capacity: spec.capacity.unwrap_or(defaults.capacity),
            expiry_secs: spec.expiry_seconds.unwrap_or(defaults.expiry_seconds),
            ack_required: spec.ack_required,
            publish_rate: spec.publish_rate.as_ref().map(|rate| RateLimit {
                per_second: rate.per_second,
                burst: rate.burst,
            }),
            bind: spec.bind.clone(),
            schemas: spec.schemas.clone(),
            coalesce: spec.coalesce.as_ref().map(Into::into),
        };
        by_name.insert(name, entry);
    }
    ChannelFile {
        channels: by_name.into_values().collect(),
    }
}

/// The ConfigMap holding node settings and the channel file.
pub fn config_map(cluster: &PushCluster, channels: &[Channel]) -> ConfigMap {
    let mut data = node_settings(cluster);
    data.insert(
        CHANNELS_KEY.into(),
        serde_json::to_string_pretty(&channel_file(cluster, channels)).expect("JSON serializes"),
    );
    ConfigMap {
        metadata: meta(cluster, &names(cluster).config),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The node pods' ServiceAccount (no API access needed).
pub fn service_account(cluster: &PushCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(cluster, &names(cluster).node),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

fn secret_env(name: &str, key: &SecretKey) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: key.name.clone(),
                key: key.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// A short stable hash of the node settings: pods restart when settings change, but
/// not when only channels change (nodes reload those live).
pub fn settings_hash(cluster: &PushCluster) -> String {
    let text = serde_json::to_string(&node_settings(cluster)).expect("JSON serializes");
    // FNV-1a: stable across builds and platforms.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The node Deployment with `replicas` pods.
pub fn deployment(cluster: &PushCluster, replicas: i32) -> Deployment {
    let spec = &cluster.spec;
    let names = names(cluster);
    let mut env = vec![
        field_env(settings::NODE_ID, "metadata.name"),
        field_env("POD_IP", "status.podIP"),
        EnvVar {
            name: settings::ADVERTISE_ADDR.into(),
            value: Some(format!("$(POD_IP):{NODE_PORT}")),
            ..EnvVar::default()
        },
        secret_env(settings::API_KEY, &spec.auth.api_key_secret_ref),
    ];
    if let Some(key) = &spec.auth.jwt_secret_ref {
        env.push(secret_env(settings::JWT_SECRET, key));
    }
    if let Some(key) = &spec.redis.url_secret_ref {
        env.push(secret_env(settings::REDIS_URL, key));
    }
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: "/etc/herald".into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.config.clone(),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: CHANNELS_KEY.into(),
                path: CHANNELS_KEY.into(),
                ..Default::default()
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(key) = &spec.auth.public_keys_secret_ref {
        mounts.push(VolumeMount {
            name: "keys".into(),
            mount_path: "/etc/herald/keys".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(key.name.clone()),
                items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                    key: key.key.clone(),
                    path: "public.pem".into(),
                    ..Default::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    // Endpoints drop the pod during the pre-stop pause, then the node drains.
    let pre_stop = 5;
    let grace = i64::from(spec.drain_seconds) + pre_stop + 10;
    let container = Container {
        name: "node".into(),
        image: Some(spec.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: NODE_PORT,
            ..ContainerPort::default()
        }]),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: pre_stop }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "herald.dev/settings-hash".to_owned(),
        settings_hash(cluster),
    );
    Deployment {
        metadata: meta(cluster, &names.node),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cluster)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.node.clone()),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(grace),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The Service in front of the node pods.
pub fn service(cluster: &PushCluster) -> Service {
    Service {
        metadata: meta(cluster, &names(cluster).node),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one node pod voluntarily down at a time.
pub fn pod_disruption_budget(cluster: &PushCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(cluster, &names(cluster).node),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The Ingress, when the cluster asks for one, with WebSocket-friendly timeouts.
pub fn ingress(cluster: &PushCluster) -> Option<Ingress> {
    let spec = cluster.spec.ingress.as_ref()?;
    let names = names(cluster);
    let mut metadata = meta(cluster, &names.ingress);
    metadata.annotations = Some(BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/proxy-read-timeout".to_owned(),
            "3600".to_owned(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-send-timeout".to_owned(),
            "3600".to_owned(),
        ),
    ]));
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names.node.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::PushClusterSpec;

    fn cluster() -> PushCluster {
        let spec: PushClusterSpec = serde_json::from_value(json!({
            "redis": {"addresses": ["redis-0:6379", "redis-1:6379", "redis-2:6379"]},
            "auth": {"jwtSecretRef": {"name": "herald", "key": "jwt"},
                     "apiKeySecretRef": {"name": "herald", "key": "api-key"}},
            "drainSeconds": 20,
        }))
        .unwrap();
        let mut cluster = PushCluster::new("push", spec);
        cluster.metadata.namespace = Some("apps".into());
        cluster.metadata.uid = Some("uid-1".into());
        cluster
    }

    #[test]
    fn the_longest_allowed_name_gives_valid_object_names() {
        let mut c = cluster();
        c.metadata.name = Some("a".repeat(MAX_CLUSTER_NAME));
        let n = names(&c);
        assert_eq!(n.node.len(), 63, "{}", n.node);
        assert!(n.config.len() <= 253 && n.ingress.len() <= 63);
        let crd = serde_json::to_string(&<PushCluster as kube::CustomResourceExt>::crd()).unwrap();
        assert!(
            crd.contains(&format!("self.metadata.name.size() <= {MAX_CLUSTER_NAME}")),
            "the CRD's name rule and MAX_CLUSTER_NAME disagree"
        );
    }

    #[test]
    fn the_crd_refuses_the_channel_names_nodes_refuse() {
        let crd = serde_json::to_string(&<Channel as kube::CustomResourceExt>::crd()).unwrap();
        let pattern =
            serde_json::to_string(herald_contract::channel_pattern::NAME_OR_PATTERN).unwrap();
        assert!(crd.contains(&format!("\"pattern\":{pattern}")), "{crd}");
        let max = herald_contract::channel_name::MAX_LEN;
        assert!(
            crd.contains(&format!(
                "\"maxLength\":{max},\"minLength\":1,\"nullable\":true,\"pattern\":{pattern}"
            )),
            "{crd}"
        );
    }

    #[test]
    fn default_channels_are_the_ones_a_node_serves_without_a_file() {
        let mut c = cluster();
        let mut expected = herald_contract::channels::legacy_defaults();
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(channel_file(&c, &[]).channels, expected);
        c.spec.channel_defaults.capacity = 7;
        assert!(channel_file(&c, &[])
            .channels
            .iter()
            .all(|ch| ch.capacity == 7));
        c.spec.default_channels = false;
        assert!(channel_file(&c, &[]).channels.is_empty());
    }

    #[test]
    fn every_object_is_owned_by_the_cluster() {
        let c = cluster();
        for meta in [
            config_map(&c, &[]).metadata,
            service_account(&c).metadata,
            deployment(&c, 2).metadata,
            service(&c).metadata,
            pod_disruption_budget(&c).metadata,
        ] {
            let owners = meta.owner_references.unwrap();
            assert_eq!(owners[0].uid, "uid-1");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("apps"));
        }
    }

    #[test]
    fn the_deployment_drains_longer_than_its_window_and_runs_locked_down() {
        let d = deployment(&cluster(), 3);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        assert!(pod.termination_grace_period_seconds.unwrap() > 20 + 5);
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        let ready = container.readiness_probe.as_ref().unwrap();
        assert_eq!(
            ready.http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        let env: Vec<_> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env.contains(&"HERALD_JWT_SECRET") && env.contains(&"HERALD_API_KEY"));
    }

    #[test]
    fn settings_render_the_redis_cluster_url_and_limits() {
        let settings = node_settings(&cluster());
        assert_eq!(
            settings["HERALD_REDIS_URL"],
            "redis-cluster://redis-0:6379?node=redis-1:6379&node=redis-2:6379"
        );
        assert_eq!(settings["HERALD_DRAIN_WINDOW"], "20s");
        assert_eq!(settings["HERALD_CHANNELS"], CHANNELS_PATH);
    }

    #[test]
    fn channels_override_the_legacy_defaults_and_inherit_cluster_defaults() {
        let c = cluster();
        let mut orders = Channel::new(
            "orders-channel",
            serde_json::from_value(
                json!({"cluster": "push", "name": "orders", "access": "roles",
                                          "roles": ["sales"], "history": true, "capacity": 5}),
            )
            .unwrap(),
        );
        orders.metadata.namespace = Some("apps".into());
        let stock = Channel::new(
            "stock_levels",
            serde_json::from_value(json!({"cluster": "push", "access": "authenticated"})).unwrap(),
        );
        let file = channel_file(&c, &[orders, stock]);
        let names: Vec<_> = file.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "alerts",
                "materials",
                "notifications",
                "orders",
                "stock_levels"
            ]
        );
        let orders = &file.channels[3];
        assert_eq!(orders.access, herald_contract::Access::Roles);
        assert_eq!(orders.capacity, 5);
        assert_eq!(orders.expiry_secs, 3600);
    }

    #[test]
    fn coalescing_reaches_the_channel_file_and_is_absent_when_unset() {
        let stock = Channel::new(
            "stock",
            serde_json::from_value(json!({"cluster": "push", "access": "user",
                "coalesce": {"windowMs": 100, "key": "typeUser", "edge": "trailing"}}))
            .unwrap(),
        );
        let plain = Channel::new(
            "plain",
            serde_json::from_value(json!({"cluster": "push", "access": "public"})).unwrap(),
        );
        let file = channel_file(&cluster(), &[stock, plain]);
        let find = |name: &str| file.channels.iter().find(|c| c.name == name).unwrap();
        assert_eq!(
            find("stock").coalesce,
            Some(herald_contract::Coalesce {
                window_ms: 100,
                key: herald_contract::CoalesceKey::TypeUser,
                edge: herald_contract::CoalesceEdge::Trailing,
                tag: None,
            })
        );
        assert_eq!(find("plain").coalesce, None);
        let text = serde_json::to_string(find("plain")).unwrap();
        assert!(!text.contains("coalesce"), "{text}");
    }

    #[test]
    fn settings_changes_roll_the_pods() {
        let a = cluster();
        let mut b = cluster();
        b.spec.limits.inbound_burst = 99;
        let template = |c: &PushCluster| deployment(c, 1).spec.template;
        assert_ne!(template(&a), template(&b));
        // Channels are not part of the pod template: nodes reload them live.
        let mut c = cluster();
        c.spec.channel_defaults.capacity = 7;
        assert_eq!(template(&a), template(&c));
    }

    #[test]
    fn ingress_only_when_asked_with_websocket_timeouts() {
        let mut c = cluster();
        assert!(ingress(&c).is_none());
        c.spec.ingress = Some(crate::crd::Ingress {
            host: "push.example.com".into(),
            class_name: Some("nginx".into()),
            tls_secret_name: Some("push-tls".into()),
        });
        let ing = ingress(&c).unwrap();
        let annotations = ing.metadata.annotations.unwrap();
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"],
            "3600"
        );
        assert_eq!(
            ing.spec.unwrap().tls.unwrap()[0].secret_name.as_deref(),
            Some("push-tls")
        );
    }
}
