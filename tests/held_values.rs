//! Large values are read in place (`$mqv` points into shared memory): an
//! item a process fetched keeps its bytes while other processes add, fetch
//! and `mqueue.clear` the queue, until that process fetches again or calls
//! `mq_pv_free`; once every process has released what it fetched and the
//! queue is drained, the queue's memory goes back.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::wait_until;

const BODY: &str = r#"modparam("mqueue", "mqueue", "name=big")
modparam("pv", "shvset", "phase=i:0")
modparam("rtimer", "timer", "name=h;interval=20000u;mode=1;")
modparam("rtimer", "exec", "timer=h;route=HOLD")
modparam("rtimer", "timer", "name=c1;interval=2000u;mode=1;")
modparam("rtimer", "exec", "timer=c1;route=CHURN")
modparam("rtimer", "timer", "name=c2;interval=2000u;mode=1;")
modparam("rtimer", "exec", "timer=c2;route=CHURN")
route[HOLD] {
    if ($shv(phase) == 1) {
        $shv(phase) = 2;
        if (mq_fetch("big")) {
            xlog("L_INFO", "H|before|$mqk(big)|$(mqv(big){s.md5})\n");
        }
    }
    if ($shv(phase) == 3) {
        $shv(phase) = 4;
        xlog("L_INFO", "H|after|$mqk(big)|$(mqv(big){s.md5})\n");
        mq_pv_free("big");
        xlog("L_INFO", "H|freed\n");
    }
}
route[CHURN] {
    if ($shv(phase) == 4 && $var(released) == 0) {
        $var(released) = 1;
        mq_pv_free("big");
        xlog("L_INFO", "R|$pp\n");
    }
    if ($shv(phase) != 2) { return; }
    if ($var(ready) == 0) {
        $var(ready) = 1;
        $var(fill) = "$pp-";
        while ($(var(fill){s.len}) < 6000) { $var(fill) = $var(fill) + $var(fill); }
    }
    $var(n) = $var(n) + 1;
    mq_add("big", "c$pp-$var(n)", "$var(fill)");
    mq_add("big", "s$pp-$var(n)", "small");
    mq_fetch("big");
    mq_fetch("big");
    if ($var(n) mod 100 == 0) { xlog("L_INFO", "C|$pp|$var(n)|$(var(fill){s.len})\n"); }
}
"#;

fn md5_hex(data: &str) -> String {
    let dir = common::TempDir::new("md5");
    let file = dir.0.join("v");
    std::fs::write(&file, data).unwrap();
    let out = Command::new("md5sum")
        .arg(&file)
        .output()
        .expect("md5sum (coreutils)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_held_large_value_keeps_its_bytes_through_other_processes_work() {
    let k = common::start_timers(BODY, 1, 100_000);
    let start = k.stat("big", "shm_bytes");
    let value: String = (0..8192).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let expected = md5_hex(&value);
    k.rpc(&["mqueue.add", "big", "held", &value])
        .expect("mqueue.add");
    k.rpc(&["pv.shvSet", "phase", "int", "1"]).unwrap();
    let before = k.wait_marked("H|before|", 1, Duration::from_secs(10));
    assert_eq!(before, [format!("held|{expected}")], "{}", k.log());
    // Other processes add, fetch and clear around the held item.
    let mut clears = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while k.marked("C|").len() < 10 || clears < 30 {
        assert!(Instant::now() < deadline, "no churn:\n{}", k.log());
        k.rpc(&["mqueue.clear", "big"]).expect("mqueue.clear");
        clears += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let churn = k.marked("C|");
    assert!(
        churn
            .iter()
            .all(|l| l.rsplit('|').next().unwrap().parse::<usize>().unwrap() >= 6000),
        "churned values are large: {churn:?}"
    );
    k.rpc(&["pv.shvSet", "phase", "int", "3"]).unwrap();
    let after = k.wait_marked("H|after|", 1, Duration::from_secs(10));
    assert_eq!(
        after,
        [format!("held|{expected}")],
        "bytes changed while held"
    );
    assert_eq!(
        k.wait_marked("H|freed", 1, Duration::from_secs(10)).len(),
        1
    );
    // The churning processes release what they fetched last, too.
    assert_eq!(k.wait_marked("R|", 2, Duration::from_secs(10)).len(), 2);
    // Drained and released: the memory goes back (the spare ages out
    // within two timer ticks).
    k.rpc(&["mqueue.clear", "big"]).unwrap();
    let back = wait_until(Duration::from_secs(20), || {
        (k.stat("big", "shm_bytes") - start <= 512).then_some(())
    });
    assert!(
        back.is_some(),
        "{} bytes left after drain and release",
        k.stat("big", "shm_bytes") - start
    );
}
