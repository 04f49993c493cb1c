//! The http-cache `CacheManager` (feature `http-cache`), through `http-cache-reqwest` and
//! directly, on every engine.
#![cfg(feature = "http-cache")]

mod common;

conformance!(
    http_cache_reqwest_serves_repeats_from_dynamodb_for_every_process,
    records_round_trip_and_large_bodies_go_to_chunks,
);

mod suite {
    use dynacache::Table;
    use dynacache::http_cache::DynamoDbManager;
    use http_cache::{CacheManager, HttpResponse, HttpVersion};
    use http_cache_reqwest::{Cache, CacheMode, HttpCache, HttpCacheOptions};
    use http_cache_semantics::CachePolicy;

    use crate::common::origin::Origin;

    fn client(manager: DynamoDbManager) -> reqwest_middleware::ClientWithMiddleware {
        reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(Cache(HttpCache {
                mode: CacheMode::Default,
                manager,
                options: HttpCacheOptions::default(),
            }))
            .build()
    }

    pub async fn http_cache_reqwest_serves_repeats_from_dynamodb_for_every_process(table: Table) {
        let origin = Origin::start().await;
        let url = origin.url("/max-age/600");
        // Two managers on one table: two processes of a fleet.
        let a = client(DynamoDbManager::new(table.clone()).unwrap());
        let b = client(DynamoDbManager::new(table.clone()).unwrap());
        let first = a.get(&url).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let body = first.text().await.unwrap();
        for c in [&a, &b] {
            let again = c.get(&url).send().await.unwrap();
            assert_eq!(again.text().await.unwrap(), body);
        }
        assert_eq!(origin.count("/max-age/600"), 1);
        // The record is a value of the key/value cache, in its own namespace.
        let manager = DynamoDbManager::new(table).unwrap();
        assert_eq!(manager.cache().namespace(), "http-cache");
        assert_eq!(manager.cache().len().await.unwrap(), 1);
    }

    fn record(url: &str, body: Vec<u8>) -> (HttpResponse, CachePolicy) {
        let req = http::Request::get(url).body(()).unwrap();
        let res = http::Response::builder()
            .status(200)
            .header("cache-control", "max-age=60")
            .body(())
            .unwrap();
        let policy = CachePolicy::new(&req, &res);
        let mut headers = http_cache::HttpHeaders::default();
        headers.insert("cache-control".into(), "max-age=60".into());
        let response = HttpResponse {
            body,
            headers,
            status: 200,
            url: url.parse().unwrap(),
            version: HttpVersion::Http11,
            metadata: Some(b"meta".to_vec()),
        };
        (response, policy)
    }

    pub async fn records_round_trip_and_large_bodies_go_to_chunks(table: Table) {
        let manager = DynamoDbManager::new(table.clone()).unwrap();
        let big: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for (key, body) in [
            ("GET:https://a.example/small", b"small".to_vec()),
            ("GET:https://a.example/big", big),
        ] {
            let (response, policy) = record("https://a.example/", body.clone());
            manager.put(key.into(), response, policy).await.unwrap();
            let (got, policy) = manager.get(key).await.unwrap().expect("stored");
            assert_eq!(got.body, body);
            assert_eq!(got.status, 200);
            assert_eq!(got.metadata.as_deref(), Some(&b"meta"[..]));
            assert!(
                policy.time_to_live(std::time::SystemTime::now())
                    > std::time::Duration::from_secs(50)
            );
            manager.delete(key).await.unwrap();
            assert!(manager.get(key).await.unwrap().is_none());
        }
        assert!(
            manager
                .get("GET:https://a.example/never")
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// A table nobody can reach: reads are misses and writes are dropped, never errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_table_fails_open() {
    use http_cache::{CacheManager, HttpResponse, HttpVersion};
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let table = dynacache::Table::builder()
        .name("unreachable")
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .policy(dynacache::TablePolicy::AssumeExists)
        .open()
        .await
        .unwrap();
    let manager = dynacache::http_cache::DynamoDbManager::new(table).unwrap();
    assert!(manager.get("k").await.unwrap().is_none());
    let req = http::Request::get("https://a.example/").body(()).unwrap();
    let res = http::Response::builder().status(200).body(()).unwrap();
    let policy = http_cache_semantics::CachePolicy::new(&req, &res);
    let response = HttpResponse {
        body: b"x".to_vec(),
        headers: Default::default(),
        status: 200,
        url: "https://a.example/".parse().unwrap(),
        version: HttpVersion::Http11,
        metadata: None,
    };
    let back = manager.put("k".into(), response, policy).await.unwrap();
    assert_eq!(back.body, b"x");
    manager.delete("k").await.unwrap();
}
