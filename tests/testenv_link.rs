//! The env's links (to the control plane, or to an app cluster when asked) can be broken on demand: through a link of the test's own, requests hang
//! after `cut`, fail at once after `reset`, work again after `restore` (held ones resume), and take longer by the
//! `delay`.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::support::{self, env};

async fn get(client: &Client) -> Result<(), kube::Error> {
    Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .map(|_| ())
}

/// How long the fastest of `n` GETs took.
async fn fastest_get(client: &Client, n: usize) -> Duration {
    let mut fastest = Duration::MAX;
    for _ in 0..n {
        let started = Instant::now();
        get(client).await.expect("GET through the link");
        fastest = fastest.min(started.elapsed());
    }
    fastest
}

async fn client(kubeconfig: &Path) -> Client {
    support::client_for(kubeconfig).await
}

#[tokio::test]
async fn default_link_reaches_the_control_plane() {
    let _env = support::env_shared().await;
    get(&client(&env().control_plane_link_kubeconfig).await)
        .await
        .expect("GET through the default link");
}

#[tokio::test]
async fn a_link_to_an_app_cluster_reaches_that_cluster_and_breaks_alone() {
    let _env = support::env_shared().await;
    let link = support::link_to("applink", "app");
    let through = client(&link.kubeconfig).await;
    let direct = client(&env().app_kubeconfig).await;
    let uid = |client: Client| async move {
        Api::<Namespace>::all(client)
            .get("kube-system")
            .await
            .map(|ns| ns.metadata.uid)
    };
    assert_eq!(
        uid(through.clone()).await.expect("GET through the app link"),
        uid(direct.clone()).await.unwrap(),
        "the app link leads to another cluster"
    );
    env().script(&["link", "cut", &link.name]);
    let hung = tokio::time::timeout(Duration::from_secs(2), get(&through)).await;
    assert!(hung.is_err(), "a request through a cut app link answered: {hung:?}");
    get(&direct).await.expect("the app cluster itself still answers");
    env().script(&["link", "restore", &link.name]);
    get(&through).await.expect("GET through the restored app link");
}

#[tokio::test]
async fn link_cut_reset_restore() {
    let _env = support::env_shared().await;
    let link = support::link("link");
    let (name, kubeconfig) = (&link.name, &link.kubeconfig);
    let pooled = client(kubeconfig).await;
    get(&pooled).await.expect("GET through a fresh link");

    env().script(&["link", "cut", name]);
    let hung = tokio::time::timeout(Duration::from_secs(2), get(&pooled)).await;
    assert!(
        hung.is_err(),
        "a request on an open connection answered during a cut: {hung:?}"
    );
    // A connection opened during the cut hangs as well, and resumes once the link is restored.
    let during_cut = client(kubeconfig).await;
    let mut held = tokio::spawn(async move {
        let started = Instant::now();
        (get(&during_cut).await, started.elapsed())
    });
    let early = tokio::time::timeout(Duration::from_secs(1), &mut held).await;
    assert!(early.is_err(), "a new connection got through a cut link: {early:?}");
    env().script(&["link", "restore", name]);
    let (result, took) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the request held by the cut resumes after restore")
        .unwrap();
    result.expect("the request held by the cut succeeds after restore");
    assert!(took >= Duration::from_secs(1), "it was held for {took:?}");

    env().script(&["link", "reset", name]);
    let started = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(5), get(&client(kubeconfig).await))
        .await
        .expect("a request to a reset link does not hang");
    let took = started.elapsed();
    assert!(refused.is_err(), "a request got through a reset link");
    assert!(took < Duration::from_secs(1), "a reset link took {took:?} to fail");
    let open = tokio::time::timeout(Duration::from_secs(5), get(&pooled))
        .await
        .expect("a connection open before the reset does not hang");
    assert!(open.is_err(), "a connection open before the reset still answers");

    env().script(&["link", "restore", name]);
    get(&client(kubeconfig).await).await.expect("GET after restore");
    get(&pooled).await.expect("GET on the old client after restore");
}

#[tokio::test]
async fn link_delay_adds_round_trip_time() {
    let _env = support::env_shared().await;
    let link = support::link("delay");
    let (name, kubeconfig) = (&link.name, &link.kubeconfig);
    let client = client(kubeconfig).await;
    // On a machine busy enough that a plain GET takes longer than the delay, one measurement says nothing: the
    // delay must show against the undelayed time in one of a few tries, each measured afresh.
    let mut tries = Vec::new();
    for _ in 0..5 {
        env().script(&["link", "delay", "0", name]);
        let before = fastest_get(&client, 5).await;
        env().script(&["link", "delay", "200", name]);
        let delayed = fastest_get(&client, 3).await;
        env().script(&["link", "delay", "0", name]);
        let after = fastest_get(&client, 3).await;
        if delayed >= before + Duration::from_millis(190) && after < before + Duration::from_millis(100) {
            return;
        }
        tries.push(format!(
            "without {before:?}, with delay 200 {delayed:?}, after delay 0 {after:?}"
        ));
    }
    panic!("the delay did not show as round-trip time in any try (fastest GETs): {tries:?}");
}

#[tokio::test]
async fn watch_through_a_link_resumes_after_a_cut() {
    let _env = support::env_shared().await;
    let link = support::link("watch");
    let (name, kubeconfig) = (&link.name, &link.kubeconfig);
    let direct = support::control_plane().await;
    let ns = support::namespace(&direct, "linkwatch").await;
    let through = Api::<ConfigMap>::namespaced(client(kubeconfig).await, &ns);
    let mut events = watcher(through, watcher::Config::default()).boxed();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                return;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the watch through the link started within 30s");

    env().script(&["link", "cut", name]);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "during-cut"}})).unwrap();
    Api::<ConfigMap>::namespaced(direct, &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
    assert!(early.is_err(), "the watch saw an event through a cut link: {early:?}");

    env().script(&["link", "restore", name]);
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(cm)) = event
                && cm.metadata.name.as_deref() == Some("during-cut")
            {
                return;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the held watch delivered the ConfigMap after restore");
}
