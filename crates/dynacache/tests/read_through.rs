//! Read-through (`get_or_insert_with`), leases and metrics, on every engine: single flight in
//! one process and across processes (separate `Cache` instances, and real child processes
//! killed with SIGKILL while they hold a lease), the bound on how long followers wait,
//! fail-safe, refresh-ahead, user leases with fencing tokens, `Table::warm`, and the metrics the
//! `metrics` module documents.

mod common;

conformance!(
    concurrent_misses_in_one_process_compute_once,
    a_value_stored_as_another_type_is_recomputed,
    concurrent_misses_across_instances_compute_once,
    a_late_process_uses_the_value_stored_before_it_took_the_lease,
    a_killed_lease_holder_is_taken_over_with_a_larger_token,
    a_killed_computation_is_taken_over_after_its_lease_expires,
    a_follower_in_another_process_waits_at_most_its_bound,
    a_follower_computes_itself_after_its_wait_bound,
    a_cancelled_leader_releases_its_lease,
    fail_safe_serves_a_recently_expired_value_when_the_factory_fails,
    refresh_ahead_recomputes_a_costly_value_early_once,
    refresh_ahead_recomputes_early_with_fleet_single_flight,
    a_cancelled_early_refresh_does_not_stop_later_ones,
    without_refresh_ahead_nothing_is_recomputed_early,
    a_hit_through_the_in_process_tier_costs_no_read,
    leases_are_exclusive_renewable_and_fenced,
    long_and_binary_lease_names,
    warm_succeeds_and_reports_a_missing_table,
);

/// The child process of the takeover tests: what it does, and where the table is.
const CHILD_MODE: &str = "DYNACACHE_TEST_CHILD_MODE";
const CHILD_ENDPOINT: &str = "DYNACACHE_TEST_CHILD_ENDPOINT";
const CHILD_TABLE: &str = "DYNACACHE_TEST_CHILD_TABLE";
const CHILD_LEASE_MS: &str = "DYNACACHE_TEST_CHILD_LEASE_MS";
/// What starts the child's words on stdout (libtest prints there too).
const CHILD_SAYS: &str = "DYNACACHE_CHILD ";

/// Not a test: the child process of the takeover tests, started by them (this test binary run
/// again with `--ignored --exact child_process`). Without `DYNACACHE_TEST_CHILD_MODE` it does
/// nothing.
#[test]
#[ignore = "the child process of the lease-takeover tests; does nothing when run by hand"]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Killed by the parent long before this; the bound only keeps a lost child from lingering.
    let outcome = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(120), child::run(&mode)).await
    });
    assert!(outcome.is_err(), "the child never finishes on its own");
}

mod child {
    use std::time::Duration;

    use dynacache::{Cache, Expiry, FleetSingleFlight, Table, TablePolicy};

    use super::*;

    fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
    }

    fn say(line: &str) {
        // println! flushes at each newline (stdout is line buffered).
        println!("{CHILD_SAYS}{line}");
    }

    pub async fn run(mode: &str) {
        let table = Table::builder()
            .name(var(CHILD_TABLE))
            .endpoint_url(var(CHILD_ENDPOINT))
            .policy(TablePolicy::AssumeExists)
            .open()
            .await
            .unwrap();
        let lease = Duration::from_millis(var(CHILD_LEASE_MS).parse().unwrap());
        match mode {
            "lease" => {
                let cache = Cache::new(table).unwrap();
                let held = cache.lease("job", lease).await.unwrap().expect("free");
                say(&format!("token {}", held.token()));
                std::future::pending::<()>().await;
            }
            "read_through" => {
                let cache = Cache::builder()
                    .fleet_single_flight(FleetSingleFlight::new(lease))
                    .build(table)
                    .unwrap();
                let _: String = cache
                    .get_or_insert_with("report", Expiry::After(Duration::from_secs(600)), || {
                        say("computing");
                        std::future::pending()
                    })
                    .await;
                unreachable!("the factory never finishes");
            }
            other => panic!("unknown child mode {other}"),
        }
    }
}

mod suite {
    use std::collections::HashMap;
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use dynacache::{
        Cache, Expiry, FleetSingleFlight, InProcessTier, ManualClock, Table, TablePolicy,
    };
    use tokio::sync::{Notify, mpsc};

    use super::*;

    /// Bounds a wait that should end long before it (a hang guard, not a timing assertion).
    async fn guard<T>(what: &str, secs: u64, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .unwrap_or_else(|_| panic!("{what}: still waiting after {secs} s"))
    }

    fn ttl() -> Expiry {
        Expiry::After(Duration::from_secs(600))
    }

    // ----- single flight in one process -------------------------------------------------

    pub async fn concurrent_misses_in_one_process_compute_once(table: Table) {
        let cache = Cache::new(table).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_insert_with("answer", ttl(), || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            format!("computed by caller {i}")
                        })
                        .await
                })
            })
            .collect();
        let values: Vec<String> = futures::future::try_join_all(tasks).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one computation for 64 misses"
        );
        assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
        let again: String = cache
            .get_or_insert_with("answer", ttl(), || async {
                panic!("a hit never calls the factory")
            })
            .await;
        assert_eq!(again, values[0]);
        assert_eq!(cache.get::<String>("answer").await.unwrap(), Some(again));
    }

    pub async fn a_value_stored_as_another_type_is_recomputed(table: Table) {
        let cache = Cache::new(table).unwrap();
        cache.set("n", &"not a number").await.unwrap();
        let calls = AtomicUsize::new(0);
        let v: u64 = cache
            .get_or_insert_with("n", ttl(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                7
            })
            .await;
        assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 1));
        // Replaced: now a hit of the new type.
        assert_eq!(cache.get::<u64>("n").await.unwrap(), Some(7));
        let again: Result<u64, String> = cache
            .try_get_or_insert_with("n", ttl(), || async { Err("not called".to_owned()) })
            .await;
        assert_eq!(again, Ok(7));
    }

    // ----- single flight across processes -----------------------------------------------

    pub async fn concurrent_misses_across_instances_compute_once(table: Table) {
        // Separate instances coalesce nothing in memory: only the lease shares the work.
        let caches: Vec<Cache> = (0..4)
            .map(|_| {
                Cache::builder()
                    .fleet_single_flight(FleetSingleFlight::new(Duration::from_secs(5)))
                    .build(table.clone())
                    .unwrap()
            })
            .collect();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (c, cache) in caches.iter().enumerate() {
            for i in 0..16 {
                let (cache, calls) = (cache.clone(), calls.clone());
                tasks.push(tokio::spawn(async move {
                    cache
                        .get_or_insert_with("shared", ttl(), || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            format!("instance {c}, caller {i}")
                        })
                        .await
                }));
            }
        }
        let values: Vec<String> = guard("64 callers", 60, futures::future::try_join_all(tasks))
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one computation in the fleet"
        );
        assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    }

    /// The endpoint another process would use for this table: the embedded engine's loopback
    /// endpoint, or DynamoDB Local's.
    fn endpoint(table: &Table) -> String {
        table
            .local_endpoint()
            .map(str::to_owned)
            .or_else(|| std::env::var(common::LOCAL_ENV).ok())
            .expect("an endpoint another process can reach")
    }

    /// A TCP proxy to the table's endpoint that can hold back the next response: a read the
    /// engine answered reaches the caller only when the test lets it.
    struct LateReplies {
        url: String,
        hold: Arc<AtomicBool>,
        held: Arc<Notify>,
        release: Arc<Notify>,
    }

    impl LateReplies {
        async fn start(endpoint: &str) -> LateReplies {
            let upstream = endpoint.trim_start_matches("http://").to_owned();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let proxy = LateReplies {
                url: format!("http://{}", listener.local_addr().unwrap()),
                hold: Arc::new(AtomicBool::new(false)),
                held: Arc::new(Notify::new()),
                release: Arc::new(Notify::new()),
            };
            let (hold, held, release) = (
                proxy.hold.clone(),
                proxy.held.clone(),
                proxy.release.clone(),
            );
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                    });
                    let (hold, held, release) = (hold.clone(), held.clone(), release.clone());
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match server_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if hold.swap(false, Ordering::SeqCst) {
                                held.notify_one();
                                release.notified().await;
                            }
                            if client_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            proxy
        }
    }

    /// A process whose lookup missed, but that takes the lease only after another process
    /// stored the value and released it, uses that value instead of computing it again.
    pub async fn a_late_process_uses_the_value_stored_before_it_took_the_lease(table: Table) {
        let proxy = LateReplies::start(&endpoint(&table)).await;
        let flight = FleetSingleFlight::new(Duration::from_secs(5));
        let late = Table::builder()
            .name(table.name())
            .endpoint_url(&proxy.url)
            .policy(TablePolicy::AssumeExists)
            .open()
            .await
            .unwrap();
        let late = Cache::builder()
            .fleet_single_flight(flight)
            .build(late)
            .unwrap();
        let first = Cache::builder()
            .fleet_single_flight(flight)
            .build(table)
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        proxy.hold.store(true, Ordering::SeqCst);
        let late_call = {
            let calls = calls.clone();
            tokio::spawn(async move {
                late.get_or_insert_with("k", ttl(), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    "late".to_owned()
                })
                .await
            })
        };
        // The engine answered the late lookup (nothing there); the answer is held back while
        // the other process computes, stores, and releases the lease.
        guard("the late lookup", 30, proxy.held.notified()).await;
        let v: String = guard(
            "the first process",
            30,
            first.get_or_insert_with("k", ttl(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                "first".to_owned()
            }),
        )
        .await;
        assert_eq!(v, "first");
        proxy.release.notify_one();
        let late = guard("the late process", 30, late_call).await.unwrap();
        assert_eq!(late, "first", "the stored value, not a second computation");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A child process: this test binary, running `child_process` in `mode`, on `table`. It is
    /// killed when dropped, so a failing test leaves no process behind.
    struct Child {
        process: std::process::Child,
        lines: mpsc::UnboundedReceiver<String>,
    }

    impl Child {
        fn start(table: &Table, mode: &str, lease: Duration) -> Child {
            let mut process = Command::new(std::env::current_exe().unwrap())
                .args([
                    "child_process",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_MODE, mode)
                .env(CHILD_ENDPOINT, endpoint(table))
                .env(CHILD_TABLE, table.name())
                .env(CHILD_LEASE_MS, lease.as_millis().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the child process");
            let stdout = process.stdout.take().unwrap();
            let (tx, lines) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    // libtest may have started the line (`test child_process ... `).
                    if let Some((_, said)) = line.split_once(CHILD_SAYS) {
                        let _ = tx.send(said.to_owned());
                    }
                }
            });
            Child { process, lines }
        }

        /// The child's next line.
        async fn said(&mut self) -> String {
            guard("the child process", 60, self.lines.recv())
                .await
                .expect("the child process ended early")
        }

        /// SIGKILL (on Unix), and reap it.
        fn kill(&mut self) {
            self.process.kill().unwrap();
            self.process.wait().unwrap();
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }

    pub async fn a_killed_lease_holder_is_taken_over_with_a_larger_token(table: Table) {
        let cache = Cache::new(table.clone()).unwrap();
        let lease = Duration::from_secs(2);
        let mut child = Child::start(&table, "lease", lease);
        let said = child.said().await;
        let child_token: u64 = said.strip_prefix("token ").unwrap().parse().unwrap();
        assert!(
            cache.lease("job", lease).await.unwrap().is_none(),
            "the child holds it"
        );
        child.kill();
        // The dead holder never releases it: it is free once it expires.
        let taken = guard("taking over the lease", 30, async {
            loop {
                if let Some(taken) = cache.lease("job", lease).await.unwrap() {
                    return taken;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            taken.token() > child_token,
            "{} > {child_token}",
            taken.token()
        );
    }

    pub async fn a_killed_computation_is_taken_over_after_its_lease_expires(table: Table) {
        let mut child = Child::start(&table, "read_through", Duration::from_secs(2));
        assert_eq!(child.said().await, "computing");
        child.kill();
        // Waits far longer than the hang guard: completing means the lease was taken over.
        let flight = FleetSingleFlight::new(Duration::from_secs(2)).wait(Duration::from_secs(600));
        let cache = Cache::builder()
            .fleet_single_flight(flight)
            .build(table)
            .unwrap();
        let calls = AtomicUsize::new(0);
        let calls = &calls;
        let callers = (0..8).map(|_| {
            cache.get_or_insert_with("report", ttl(), || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                "computed by the survivor".to_owned()
            })
        });
        let values = guard("the survivor", 30, futures::future::join_all(callers)).await;
        assert!(
            values.iter().all(|v| v == "computed by the survivor"),
            "{values:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.get::<String>("report").await.unwrap().as_deref(),
            Some("computed by the survivor")
        );
    }

    pub async fn a_follower_in_another_process_waits_at_most_its_bound(table: Table) {
        // The child holds the lease for a minute and never finishes.
        let mut child = Child::start(&table, "read_through", Duration::from_secs(60));
        assert_eq!(child.said().await, "computing");
        let flight =
            FleetSingleFlight::new(Duration::from_secs(60)).wait(Duration::from_millis(300));
        let cache = Cache::builder()
            .fleet_single_flight(flight)
            .build(table)
            .unwrap();
        let v: String = guard(
            "a follower with a 300 ms bound",
            30,
            cache.get_or_insert_with("report", ttl(), || async { "mine".to_owned() }),
        )
        .await;
        assert_eq!(v, "mine");
        child.kill();
    }

    pub async fn a_follower_computes_itself_after_its_wait_bound(table: Table) {
        let flight = FleetSingleFlight::new(Duration::from_secs(60));
        let slow = Cache::builder()
            .fleet_single_flight(flight)
            .build(table.clone())
            .unwrap();
        let follower = Cache::builder()
            .fleet_single_flight(flight.wait(Duration::from_millis(200)))
            .build(table)
            .unwrap();
        let (started, finish) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let leader = {
            let (started, finish) = (started.clone(), finish.clone());
            tokio::spawn(async move {
                slow.get_or_insert_with("k", ttl(), || async move {
                    started.notify_one();
                    finish.notified().await;
                    "slow".to_owned()
                })
                .await
            })
        };
        // The slow instance holds the lease (for a minute) while its factory runs.
        guard("the slow factory to start", 30, started.notified()).await;
        let v: String = guard(
            "a follower with a 200 ms bound",
            30,
            follower.get_or_insert_with("k", ttl(), || async { "follower".to_owned() }),
        )
        .await;
        assert_eq!(v, "follower");
        finish.notify_one();
        assert_eq!(guard("the slow leader", 30, leader).await.unwrap(), "slow");
    }

    pub async fn a_cancelled_leader_releases_its_lease(table: Table) {
        // A leader whose computation is cancelled (its caller gave up, a client hung up) ends
        // its holding, so the fleet does not wait out the lease.
        let flight = FleetSingleFlight::new(Duration::from_secs(600));
        let leader_cache = Cache::builder()
            .fleet_single_flight(flight)
            .build(table.clone())
            .unwrap();
        let follower = Cache::builder()
            .fleet_single_flight(flight)
            .build(table)
            .unwrap();
        let started = Arc::new(Notify::new());
        let leader = {
            let started = started.clone();
            tokio::spawn(async move {
                leader_cache
                    .get_or_insert_with("k", ttl(), || async move {
                        started.notify_one();
                        std::future::pending::<String>().await
                    })
                    .await
            })
        };
        guard("the leader's factory to start", 30, started.notified()).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        // Held, the lease would keep the follower waiting for up to 600 s.
        let v: String = guard(
            "a follower after the leader was cancelled",
            60,
            follower.get_or_insert_with("k", ttl(), || async { "follower".to_owned() }),
        )
        .await;
        assert_eq!(v, "follower");
    }

    // ----- fail-safe ---------------------------------------------------------------------

    pub async fn fail_safe_serves_a_recently_expired_value_when_the_factory_fails(table: Table) {
        let clock = ManualClock::new();
        let safe = Cache::builder()
            .clock(clock.clone())
            .fail_safe(Duration::from_secs(3600))
            .build(table.clone())
            .unwrap();
        let plain = Cache::builder()
            .namespace("plain")
            .clock(clock.clone())
            .build(table)
            .unwrap();
        let minute = Expiry::After(Duration::from_secs(60));
        let failing = || async { Err::<String, _>("origin down") };

        for cache in [&safe, &plain] {
            cache.set_with("recent", &"old", minute).await.unwrap();
        }
        clock.advance(Duration::from_secs(11 * 60)); // expired 10 minutes ago
        assert_eq!(
            safe.try_get_or_insert_with("recent", minute, failing).await,
            Ok("old".to_owned())
        );
        assert_eq!(
            plain
                .try_get_or_insert_with("recent", minute, failing)
                .await,
            Err("origin down"),
            "without fail_safe the error is returned"
        );
        // Serving it stored nothing: it is still expired.
        assert_eq!(safe.get::<String>("recent").await.unwrap(), None);

        safe.set_with("long_ago", &"older", minute).await.unwrap();
        clock.advance(Duration::from_secs(121 * 60)); // expired 2 hours ago
        assert_eq!(
            safe.try_get_or_insert_with("long_ago", minute, failing)
                .await,
            Err("origin down")
        );
        // A factory that succeeds replaces it.
        assert_eq!(
            safe.try_get_or_insert_with("long_ago", minute, || async {
                Ok::<_, &str>("new".to_owned())
            })
            .await,
            Ok("new".to_owned())
        );
        assert_eq!(
            safe.get::<String>("long_ago").await.unwrap().as_deref(),
            Some("new")
        );
    }

    // ----- refresh-ahead -----------------------------------------------------------------

    /// 16 concurrent reads of `hot` (cached as 1, computed in 300 ms, 1 ms before its expiry)
    /// whose factory returns 2; returns what they got, and how often the factory ran.
    async fn reads_near_expiry(
        cache: &Cache,
        clock: &ManualClock,
        probe: &Cache,
    ) -> (Vec<u64>, usize) {
        let minute = Expiry::After(Duration::from_secs(60));
        let first: u64 = cache
            .get_or_insert_with("hot", minute, || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                1
            })
            .await;
        assert_eq!(first, 1);
        clock.advance(Duration::from_millis(59_999));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cache, probe, calls) = (cache.clone(), probe.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_insert_with("hot", minute, || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // Recomputed early: the cached value is still fresh.
                            assert_eq!(probe.get::<u64>("hot").await.unwrap(), Some(1));
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            2u64
                        })
                        .await
                })
            })
            .collect();
        let values = guard("16 readers", 60, futures::future::try_join_all(tasks))
            .await
            .unwrap();
        (values, calls.load(Ordering::SeqCst))
    }

    pub async fn refresh_ahead_recomputes_a_costly_value_early_once(table: Table) {
        let clock = ManualClock::new();
        let cache = Cache::builder()
            .clock(clock.clone())
            .refresh_ahead(1.0)
            .build(table.clone())
            .unwrap();
        let probe = Cache::builder().clock(clock.clone()).build(table).unwrap();
        // Far from expiry a value computed in 300 ms is not recomputed (the chance is e^-200).
        let far: u64 = cache
            .get_or_insert_with("far", ttl(), || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                1
            })
            .await;
        for _ in 0..20 {
            let v: u64 = cache
                .get_or_insert_with("far", ttl(), || async {
                    panic!("recomputed far from expiry")
                })
                .await;
            assert_eq!(v, far);
        }
        // 1 ms before expiry, with a cost of 300 ms, each read recomputes with a chance of
        // e^(-1/300): one of them does, the others get the cached value meanwhile.
        let (values, calls) = reads_near_expiry(&cache, &clock, &probe).await;
        assert_eq!(calls, 1, "one early recomputation");
        let mut counts = HashMap::new();
        for v in values {
            *counts.entry(v).or_insert(0) += 1;
        }
        assert_eq!(counts, HashMap::from([(2, 1), (1, 15)]));
        assert_eq!(cache.get::<u64>("hot").await.unwrap(), Some(2));
    }

    pub async fn refresh_ahead_recomputes_early_with_fleet_single_flight(table: Table) {
        let clock = ManualClock::new();
        let flight = FleetSingleFlight::new(Duration::from_secs(5));
        let cache = Cache::builder()
            .clock(clock.clone())
            .refresh_ahead(1.0)
            .fleet_single_flight(flight)
            .build(table.clone())
            .unwrap();
        let probe = Cache::builder().clock(clock.clone()).build(table).unwrap();
        // The value the lookup saw is still there when the lease is taken: it is refreshed,
        // not taken for another process's result.
        let (mut values, calls) = reads_near_expiry(&cache, &clock, &probe).await;
        assert_eq!(calls, 1, "one early recomputation");
        values.sort();
        assert_eq!(values, [vec![1; 15], vec![2]].concat());
        assert_eq!(cache.get::<u64>("hot").await.unwrap(), Some(2));
    }

    pub async fn a_cancelled_early_refresh_does_not_stop_later_ones(table: Table) {
        let clock = ManualClock::new();
        let cache = Cache::builder()
            .clock(clock.clone())
            .refresh_ahead(1.0)
            .build(table)
            .unwrap();
        let minute = Expiry::After(Duration::from_secs(60));
        let _: u64 = cache
            .get_or_insert_with("hot", minute, || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                1
            })
            .await;
        clock.advance(Duration::from_millis(59_999));
        // A read that refreshes early, then is cancelled (its request timed out, say).
        guard("a read that refreshes", 60, async {
            loop {
                let started = Arc::new(Notify::new());
                let mut read = {
                    let (cache, started) = (cache.clone(), started.clone());
                    tokio::spawn(async move {
                        cache
                            .get_or_insert_with("hot", minute, || async move {
                                started.notify_one();
                                std::future::pending::<u64>().await
                            })
                            .await
                    })
                };
                tokio::select! {
                    _ = started.notified() => {
                        read.abort();
                        let _ = read.await;
                        return;
                    }
                    // Not chosen to refresh (a chance of 1 - e^(-1/300)): again.
                    done = &mut read => assert_eq!(done.unwrap(), 1),
                }
            }
        })
        .await;
        // Later reads near expiry still refresh.
        let calls = AtomicUsize::new(0);
        for _ in 0..20 {
            let v: u64 = cache
                .get_or_insert_with("hot", minute, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    2
                })
                .await;
            if v == 2 {
                break;
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "refreshed again");
        assert_eq!(cache.get::<u64>("hot").await.unwrap(), Some(2));
    }

    pub async fn without_refresh_ahead_nothing_is_recomputed_early(table: Table) {
        let clock = ManualClock::new();
        let cache = Cache::builder()
            .clock(clock.clone())
            .build(table.clone())
            .unwrap();
        let probe = Cache::builder().clock(clock.clone()).build(table).unwrap();
        let (values, calls) = reads_near_expiry(&cache, &clock, &probe).await;
        assert_eq!(calls, 0);
        assert_eq!(values, vec![1; 16]);
    }

    pub async fn a_hit_through_the_in_process_tier_costs_no_read(table: Table) {
        let cache = Cache::builder()
            .in_process(InProcessTier::new(16 << 20).l1_ttl(Duration::from_secs(3600)))
            .refresh_ahead(1.0)
            .build(table.clone())
            .unwrap();
        let reads = || table.consumed_capacity().read_units;
        let first = reads();
        let v: Vec<u8> = cache
            .get_or_insert_with("k", ttl(), || async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                vec![7; 5000]
            })
            .await;
        assert!(reads() > first, "the engine reports the units of a lookup");
        let before = reads();
        for _ in 0..20 {
            let again: Vec<u8> = cache
                .get_or_insert_with("k", ttl(), || async { panic!("a hit") })
                .await;
            assert_eq!(again, v);
        }
        assert_eq!(reads(), before, "hits from memory read nothing");
    }

    // ----- leases ------------------------------------------------------------------------

    pub async fn leases_are_exclusive_renewable_and_fenced(table: Table) {
        let clock = ManualClock::new();
        let here = Cache::builder()
            .clock(clock.clone())
            .build(table.clone())
            .unwrap();
        let there = Cache::builder().clock(clock.clone()).build(table).unwrap();
        let ten = Duration::from_secs(10);
        let mut tokens = Vec::new();

        let mut mine = here.lease("job", ten).await.unwrap().expect("free");
        tokens.push(mine.token());
        assert_eq!(mine.name(), b"job");
        assert!(there.lease("job", ten).await.unwrap().is_none(), "held");
        assert!(
            here.lease("job", ten).await.unwrap().is_none(),
            "held, even here"
        );

        // Renewing extends it from now.
        clock.advance(Duration::from_secs(5));
        let expires = mine.expires();
        assert!(here.renew(&mut mine, ten).await.unwrap());
        assert!(mine.expires() > expires);
        clock.advance(Duration::from_secs(6)); // past the first expiry, before the renewed one
        assert!(there.lease("job", ten).await.unwrap().is_none(), "renewed");
        clock.advance(Duration::from_secs(5)); // past the renewed expiry
        let mut theirs = there.lease("job", ten).await.unwrap().expect("expired");
        tokens.push(theirs.token());
        // The old holder lost it: it can neither renew nor release it.
        assert!(!here.renew(&mut mine, ten).await.unwrap());
        assert!(!here.release(mine).await.unwrap());
        assert!(
            here.lease("job", ten).await.unwrap().is_none(),
            "still theirs"
        );
        assert!(there.renew(&mut theirs, ten).await.unwrap());

        // Releasing frees it at once, whatever the time left.
        assert!(there.release(theirs).await.unwrap());
        let again = here.lease("job", ten).await.unwrap().expect("released");
        tokens.push(again.token());
        assert!(here.release(again).await.unwrap());
        let last = there.lease("job", ten).await.unwrap().expect("released");
        tokens.push(last.token());
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "fencing tokens grow with every holder: {tokens:?}"
        );

        // Leases are not values: the namespace holds none.
        assert_eq!(here.get::<String>("job").await.unwrap(), None);
        here.set("job", &"a value").await.unwrap();
        assert_eq!(here.len().await.unwrap(), 1);
        assert!(
            there.lease("job", ten).await.unwrap().is_none(),
            "still held"
        );
        assert_eq!(
            here.get::<String>("job").await.unwrap().as_deref(),
            Some("a value")
        );
    }

    pub async fn long_and_binary_lease_names(table: Table) {
        let here = Cache::new(table.clone()).unwrap();
        let there = Cache::new(table).unwrap();
        let ten = Duration::from_secs(10);
        let long = vec![b'x'; 10_000];
        let mut long_too = long.clone();
        *long_too.last_mut().unwrap() = b'y';
        let binary = vec![0u8, 0xff, 0xfe, b'~', 0x80, b':', b'#'];
        for name in [&long, &long_too, &binary] {
            let held = here.lease(name, ten).await.unwrap().expect("free");
            assert_eq!(held.name(), name.as_slice());
            assert!(there.lease(name, ten).await.unwrap().is_none(), "held");
            let mut held = held;
            assert!(here.renew(&mut held, ten).await.unwrap());
            assert!(here.release(held.clone()).await.unwrap());
            let next = there.lease(name, ten).await.unwrap().expect("released");
            assert!(next.token() > held.token());
        }
    }

    // ----- warm --------------------------------------------------------------------------

    pub async fn warm_succeeds_and_reports_a_missing_table(table: Table) {
        table.warm().await.unwrap();
        let missing = Table::builder()
            .name(common::unique_name("missing"))
            .endpoint_url(endpoint(&table))
            .policy(TablePolicy::AssumeExists)
            .open()
            .await
            .expect("AssumeExists makes no call when opening");
        let e = missing.warm().await.unwrap_err();
        assert!(e.is_table_not_found(), "{e:?}");
    }
}

/// Metrics are recorded into a recorder local to the test's thread, so these tests run on a
/// current-thread runtime (every task on one thread), once per engine.
mod metrics_recorded {
    use std::time::Duration;

    use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
    use dynacache::{Cache, Expiry, InProcessTier, Table};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use metrics_util::{CompositeKey, MetricKind};

    use crate::common::origin::{Origin, Reply, ScriptRequest};
    use crate::common::{self, Engine};

    #[tokio::test(flavor = "current_thread")]
    async fn embedded() {
        run(common::table(Engine::Embedded).await.unwrap()).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dynamodb_local() {
        if let Some(table) = common::table(Engine::DynamoDbLocal).await {
            run(table).await;
        }
    }

    /// What was recorded since the last snapshot (counters and histograms are drained).
    struct Recorded(Vec<(CompositeKey, DebugValue)>);

    impl Recorded {
        fn take(snapshotter: &Snapshotter) -> Recorded {
            Recorded(
                snapshotter
                    .snapshot()
                    .into_vec()
                    .into_iter()
                    .map(|(key, _, _, value)| (key, value))
                    .collect(),
            )
        }

        /// The value of the metric with exactly these labels.
        fn find(
            &self,
            kind: MetricKind,
            name: &str,
            labels: &[(&str, &str)],
        ) -> Option<&DebugValue> {
            self.0.iter().find_map(|(key, value)| {
                let k = key.key();
                let mut have: Vec<(&str, &str)> =
                    k.labels().map(|l| (l.key(), l.value())).collect();
                let mut want = labels.to_vec();
                have.sort();
                want.sort();
                (key.kind() == kind && k.name() == name && have == want).then_some(value)
            })
        }

        fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            match self.find(MetricKind::Counter, name, labels) {
                Some(DebugValue::Counter(n)) => *n,
                None => 0,
                other => panic!("{name} is not a counter: {other:?}"),
            }
        }

        fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> usize {
            match self.find(MetricKind::Histogram, name, labels) {
                Some(DebugValue::Histogram(values)) => values.len(),
                None => 0,
                other => panic!("{name} is not a histogram: {other:?}"),
            }
        }

        fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            match self.find(MetricKind::Gauge, name, labels) {
                Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
                None => None,
                other => panic!("{name} is not a gauge: {other:?}"),
            }
        }
    }

    async fn run(table: Table) {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);

        // Key/value gets: a hit from the table, a miss.
        let cache = Cache::new(table.clone()).unwrap();
        cache.set("k", &1u32).await.unwrap();
        Recorded::take(&snapshotter);
        assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
        assert_eq!(cache.get::<u32>("absent").await.unwrap(), None);
        let r = Recorded::take(&snapshotter);
        assert_eq!(
            r.counter(
                "dynacache_hits_total",
                &[("cache", "kv"), ("tier", "table")]
            ),
            1
        );
        assert_eq!(r.counter("dynacache_misses_total", &[("cache", "kv")]), 1);
        assert_eq!(
            r.histogram("dynacache_storage_seconds", &[("op", "GetItem")]),
            2
        );
        assert!(
            r.counter("dynacache_read_units_total", &[]) > 0,
            "read units"
        );

        // A hit from the in-process tier, and what the tier holds.
        let tiered = Cache::builder()
            .namespace("tiered")
            .in_process(InProcessTier::new(1 << 20).l1_ttl(Duration::from_secs(3600)))
            .build(table.clone())
            .unwrap();
        tiered.set("k", &1u32).await.unwrap();
        tiered.get::<u32>("k").await.unwrap();
        Recorded::take(&snapshotter);
        tiered.get::<u32>("k").await.unwrap();
        let r = Recorded::take(&snapshotter);
        assert_eq!(
            r.counter(
                "dynacache_hits_total",
                &[("cache", "kv"), ("tier", "memory")]
            ),
            1
        );
        assert_eq!(
            r.histogram("dynacache_storage_seconds", &[("op", "GetItem")]),
            0
        );
        tiered.set("k2", &2u32).await.unwrap();
        tiered.get::<u32>("k2").await.unwrap();
        // The gauges say what the tier holds now: "k" and "k2".
        let r = Recorded::take(&snapshotter);
        let entries = |r: &Recorded| r.gauge("dynacache_in_process_entries", &[("cache", "kv")]);
        let bytes = |r: &Recorded| r.gauge("dynacache_in_process_bytes", &[("cache", "kv")]);
        assert_eq!(entries(&r), Some(2.0));
        assert!(bytes(&r).is_some_and(|b| b > 0.0), "{:?}", bytes(&r));
        tiered.clear().await.unwrap();
        let r = Recorded::take(&snapshotter);
        assert_eq!((entries(&r), bytes(&r)), (Some(0.0), Some(0.0)));

        // Read-through: a miss computed once for 8 concurrent callers (7 of them waited for
        // it), then a hit.
        let callers = (0..8).map(|_| {
            cache.get_or_insert_with("computed", Expiry::Default, || async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                5u32
            })
        });
        assert_eq!(futures::future::join_all(callers).await, vec![5; 8]);
        let r = Recorded::take(&snapshotter);
        assert_eq!(r.counter("dynacache_misses_total", &[("cache", "kv")]), 8);
        assert_eq!(
            r.counter(
                "dynacache_coalesced_total",
                &[("cache", "kv"), ("scope", "local")]
            ),
            7
        );
        let hit: u32 = cache
            .get_or_insert_with("computed", Expiry::Default, || async { 0 })
            .await;
        assert_eq!(hit, 5);
        let r = Recorded::take(&snapshotter);
        assert_eq!(
            r.counter(
                "dynacache_hits_total",
                &[("cache", "kv"), ("tier", "table")]
            ),
            1
        );
        assert_eq!(r.counter("dynacache_misses_total", &[("cache", "kv")]), 0);

        // The HTTP cache: a miss that is stored, then a hit from the table.
        let origin = Origin::start().await;
        let http = HttpCache::builder()
            .write_wait(Duration::from_secs(60))
            .build(table.clone())
            .unwrap();
        let client = CachedClient::new(reqwest::Client::new(), http);
        let url = origin.url("/max-age/600");
        Recorded::take(&snapshotter);
        let first = client.get(&url).send().await.unwrap();
        assert!(!first.from_cache());
        first.bytes().await.unwrap();
        let r = Recorded::take(&snapshotter);
        assert_eq!(r.counter("dynacache_misses_total", &[("cache", "http")]), 1);
        assert_eq!(r.counter("dynacache_stores_total", &[("cache", "http")]), 1);
        let second = client.get(&url).send().await.unwrap();
        assert!(second.from_cache());
        second.bytes().await.unwrap();
        let r = Recorded::take(&snapshotter);
        assert_eq!(
            r.counter(
                "dynacache_hits_total",
                &[("cache", "http"), ("tier", "table")]
            ),
            1
        );
        assert!(r.histogram("dynacache_storage_seconds", &[("op", "GetItem")]) >= 1);
        assert_eq!(origin.count("/max-age/600"), 1);

        // A revalidation answered with a 304 counts once.
        let tagged = |req: &ScriptRequest| {
            let reply = if req.header("if-none-match") == Some("\"v1\"") {
                Reply::new(304, "")
            } else {
                Reply::ok("v1")
            };
            reply
                .header("etag", "\"v1\"")
                .header("cache-control", "no-cache")
        };
        let url = origin.url(&origin.script("tagged", tagged));
        client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        Recorded::take(&snapshotter);
        let again = client.get(&url).send().await.unwrap();
        assert!(again.cache_facts().revalidated);
        assert_eq!(again.text().await.unwrap(), "v1");
        let r = Recorded::take(&snapshotter);
        assert_eq!(r.counter("dynacache_revalidations_total", &[]), 1);
    }
}
