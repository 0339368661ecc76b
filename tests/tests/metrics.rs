//! Prometheus metrics of a real pht-server: `-metrics`, the YAML `metrics:` section with
//! basic auth, and a `-L metrics://` service, scraped with curl.

use std::time::{Duration, Instant};

use pht_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_is_counted_and_its_bytes_exactly() {
    const N: usize = 300_000;
    let target = echo_target().await;
    let sp = free_port();
    let mp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("forward+pht://127.0.0.1:{sp}/{target}"),
            "-metrics",
            &format!("127.0.0.1:{mp}"),
        ],
        sp,
    )
    .await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let url = format!("http://127.0.0.1:{mp}/metrics");

    let (code, before) = scrape_metrics(&url, &[]).await;
    assert_eq!(code, "200", "{before}");
    assert_eq!(
        metric_sample(&before, "gost_services", &[]),
        Some(1.0),
        "{before}"
    );

    echo_roundtrip(local, &random_bytes(N, 7)).await;

    // The handler adds its byte counts when the tunnel ends, a moment after the close.
    let svc = "service=\"service-0\"";
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (code, text) = scrape_metrics(&url, &[]).await;
        assert_eq!(code, "200");
        let done = metric_sample(&text, "pht_tunnels", &[svc]) == Some(0.0)
            && metric_sample(&text, "gost_service_transfer_output_bytes_total", &[svc]).is_some()
            && metric_sample(&text, "gost_service_requests_in_flight", &[svc]) == Some(0.0);
        if done {
            break text;
        }
        assert!(Instant::now() < deadline, "tunnel never ended:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{text}");

    // One service; the metrics endpoint of -metrics is not one (as in gost).
    let services: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gost_services{"))
        .collect();
    assert_eq!(services.len(), 1, "{text}");
    assert!(services[0].ends_with(" 1"), "{text}");
    assert!(services[0].contains("host=\""), "{text}");

    let get = |name: &str, labels: &[&str]| {
        metric_sample(&text, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    assert!(get("gost_service_requests_total", &[svc]) >= 1.0);
    assert!(get("gost_service_request_duration_seconds_count", &[svc]) >= 1.0);
    // Exact: one tunnel, its splice counts every byte once, in each direction.
    assert_eq!(
        get("gost_service_transfer_input_bytes_total", &[svc]),
        N as f64
    );
    assert_eq!(
        get("gost_service_transfer_output_bytes_total", &[svc]),
        N as f64
    );
    // No error: the series is absent or zero.
    assert_eq!(
        metric_sample(&text, "gost_service_handler_errors_total", &[svc]).unwrap_or(0.0),
        0.0
    );
    assert_eq!(get("pht_tunnels", &[svc]), 0.0);
    for kind in ["push", "pull"] {
        let n = get(
            "pht_http_requests_total",
            &[svc, &format!("kind=\"{kind}\""), "code=\"200\""],
        );
        assert!(n >= 1.0, "{kind}: {n}");
    }
    let pulls = get("pht_pulls_total", &[svc, "kind=\"attached\""])
        + get("pht_pulls_total", &[svc, "kind=\"resumed\""]);
    assert!(pulls >= 1.0, "{text}");
    assert!(get("pht_push_duration_seconds_count", &[svc]) >= 1.0);

    // Other paths are not the metrics.
    let (code, _) = scrape_metrics(&format!("http://127.0.0.1:{mp}/other"), &[]).await;
    assert_eq!(code, "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_metrics_section_with_basic_auth() {
    let target = echo_target().await;
    let sp = free_port();
    let mp = free_port();
    let yaml = format!(
        "services:\n- name: fwd\n  addr: 127.0.0.1:{sp}\n  handler: {{type: forward}}\n  \
         listener: {{type: pht}}\n  forwarder: {{nodes: [{{name: t, addr: '{target}'}}]}}\n\
         metrics:\n  addr: 127.0.0.1:{mp}\n  path: /m\n  auth: {{username: prom, password: s3cret}}\n"
    );
    let file = temp_file(&format!("metrics-{mp}.yaml"), &yaml);
    let _srv = server(&["-C", &file], mp).await;
    let url = format!("http://127.0.0.1:{mp}/m");

    let (rc, out, err) = curl(&["-i", &url]).await;
    assert_eq!(rc, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("www-authenticate: basic realm="),
        "{out}"
    );
    let (code, _) = scrape_metrics(&url, &["-u", "prom:wrong"]).await;
    assert_eq!(code, "401");
    let (code, text) = scrape_metrics(&url, &["-u", "prom:s3cret"]).await;
    assert_eq!(code, "200", "{text}");
    assert_eq!(
        metric_sample(&text, "gost_services", &[]),
        Some(1.0),
        "{text}"
    );
    let (code, _) = scrape_metrics(
        &format!("http://127.0.0.1:{mp}/metrics"),
        &["-u", "prom:s3cret"],
    )
    .await;
    assert_eq!(code, "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_as_a_service() {
    let mp = free_port();
    let _srv = server(&["-L", &format!("metrics://127.0.0.1:{mp}?path=/prom")], mp).await;
    let url = format!("http://127.0.0.1:{mp}/prom");
    let (code, text) = scrape_metrics(&url, &[]).await;
    assert_eq!(code, "200", "{text}");
    // Here the metrics endpoint is a service: it counts itself, and its own scrapes.
    assert_eq!(
        metric_sample(&text, "gost_services", &[]),
        Some(1.0),
        "{text}"
    );
    let svc = "service=\"service-0\"";
    assert!(metric_sample(&text, "gost_service_requests_total", &[svc]).unwrap() >= 1.0);
    let (code, _) = scrape_metrics(&format!("http://127.0.0.1:{mp}/metrics"), &[]).await;
    assert_eq!(code, "404");
}
