-- KEMI scenario for tests/kemi.rs, the Lua twin of mqueue.js: one SIP
-- request runs every KSR.mqueue export and logs the results on one line.
local function show(v)
    if v == nil then return "null" end
    return "[" .. tostring(v) .. "]"
end

function ksr_request_route()
    local r = {}
    local function push(s) r[#r + 1] = s end
    push("get-before=" .. show(KSR.mqueue.mqk_get("q")))
    push("add=" .. KSR.mqueue.mq_add("q", "k1", "v1"))
    push("add2=" .. KSR.mqueue.mq_add("q", "k2", "v2"))
    push("add-unknown=" .. KSR.mqueue.mq_add("nope", "k", "v"))
    push("size=" .. KSR.mqueue.mq_size("q"))
    push("size-unknown=" .. KSR.mqueue.mq_size("nope"))
    push("fetch=" .. KSR.mqueue.mq_fetch("q"))
    push("k=" .. show(KSR.mqueue.mqk_get("q")) .. show(KSR.mqueue.mqk_gete("q")) .. show(KSR.mqueue.mqk_getw("q")))
    push("v=" .. show(KSR.mqueue.mqv_get("q")) .. show(KSR.mqueue.mqv_gete("q")) .. show(KSR.mqueue.mqv_getw("q")))
    push("free=" .. KSR.mqueue.mq_pv_free("q"))
    push("after-free=" .. show(KSR.mqueue.mqv_get("q")))
    push("fetch2=" .. KSR.mqueue.mq_fetch("q") .. show(KSR.mqueue.mqv_get("q")))
    push("fetch-empty=" .. KSR.mqueue.mq_fetch("q"))
    push("size-empty=" .. KSR.mqueue.mq_size("q"))
    push("fetch-unknown=" .. KSR.mqueue.mq_fetch("nope"))
    push("null-modes=" .. show(KSR.mqueue.mqk_gete("q")) .. show(KSR.mqueue.mqv_getw("q")))
    KSR.info("T|" .. table.concat(r, " ") .. "\n")
    KSR.sl.sl_send_reply(200, "OK")
end
