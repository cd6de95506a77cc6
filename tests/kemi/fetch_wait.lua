-- KEMI scenario for tests/fetch_wait.rs: KSR.mqueue.mq_fetch_wait returns
-- as mq_fetch does, waiting for an item up to the timeout.
function ksr_request_route()
    local r = {}
    local function push(s) r[#r + 1] = s end
    push("empty=" .. KSR.mqueue.mq_fetch_wait("q", 30))
    push("unknown=" .. KSR.mqueue.mq_fetch_wait("nope", 30))
    push("nowait=" .. KSR.mqueue.mq_fetch_wait("q", 0))
    KSR.mqueue.mq_add("q", "k1", "v1")
    push("item=" .. KSR.mqueue.mq_fetch_wait("q", 60000) .. "/" .. KSR.mqueue.mqk_get("q") .. "/" .. KSR.mqueue.mqv_get("q"))
    KSR.info("T|" .. table.concat(r, " ") .. "\n")
    KSR.sl.sl_send_reply(200, "OK")
end
