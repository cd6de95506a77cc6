-- Oversized and binary items through KEMI (tests/big_values.rs): each
-- check adds, fetches and compares what comes back.
local function roundtrip(name, key, val)
    local rc = KSR.mqueue.mq_add("q", key, val)
    if rc ~= 1 then
        return name .. "=add:" .. tostring(rc)
    end
    local f = KSR.mqueue.mq_fetch("q")
    local k = KSR.mqueue.mqk_get("q")
    local v = KSR.mqueue.mqv_get("q")
    if f ~= 1 then return name .. "=fetch:" .. tostring(f) end
    if k == key and v == val then
        return name .. "=ok:" .. #v
    end
    return name .. "=differs:" .. tostring(k and #k) .. "/" .. tostring(v and #v)
end

function ksr_request_route()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local bin = table.concat(bytes)
    local r = {}
    r[#r + 1] = roundtrip("mb", "big", string.rep("0123456789abcdef", 65536))
    r[#r + 1] = roundtrip("bigkey", string.rep("k", 65536), "v")
    r[#r + 1] = roundtrip("binary", "bin", string.rep(bin:sub(2), 4))
    r[#r + 1] = roundtrip("nul", "n", "a\0b\0c")
    r[#r + 1] = roundtrip("after", "x", "y")
    KSR.info("T|" .. table.concat(r, " ") .. "\n")
    KSR.sl.sl_send_reply(200, "OK")
end
