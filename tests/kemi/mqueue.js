// KEMI scenario for tests/kemi.rs: one SIP request runs every KSR.mqueue
// export and logs the results on one line.
function show(v) {
    return v === null ? "null" : (v === undefined ? "undefined" : "[" + v + "]");
}

function ksr_request_route() {
    var r = [];
    r.push("get-before=" + show(KSR.mqueue.mqk_get("q")));
    r.push("add=" + KSR.mqueue.mq_add("q", "k1", "v1"));
    r.push("add2=" + KSR.mqueue.mq_add("q", "k2", "v2"));
    r.push("add-unknown=" + KSR.mqueue.mq_add("nope", "k", "v"));
    r.push("size=" + KSR.mqueue.mq_size("q"));
    r.push("size-unknown=" + KSR.mqueue.mq_size("nope"));
    r.push("fetch=" + KSR.mqueue.mq_fetch("q"));
    r.push("k=" + show(KSR.mqueue.mqk_get("q")) + show(KSR.mqueue.mqk_gete("q")) + show(KSR.mqueue.mqk_getw("q")));
    r.push("v=" + show(KSR.mqueue.mqv_get("q")) + show(KSR.mqueue.mqv_gete("q")) + show(KSR.mqueue.mqv_getw("q")));
    r.push("free=" + KSR.mqueue.mq_pv_free("q"));
    r.push("after-free=" + show(KSR.mqueue.mqv_get("q")));
    r.push("fetch2=" + KSR.mqueue.mq_fetch("q") + show(KSR.mqueue.mqv_get("q")));
    r.push("fetch-empty=" + KSR.mqueue.mq_fetch("q"));
    r.push("size-empty=" + KSR.mqueue.mq_size("q"));
    r.push("fetch-unknown=" + KSR.mqueue.mq_fetch("nope"));
    r.push("null-modes=" + show(KSR.mqueue.mqk_gete("q")) + show(KSR.mqueue.mqv_getw("q")));
    KSR.info("T|" + r.join(" ") + "\n");
    KSR.sl.sl_send_reply(200, "OK");
}
