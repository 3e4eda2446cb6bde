-- Wireshark/tshark dissector for PSP (Google's PSP Security Protocol) over UDP port 1000.
-- Shipped with pspsim; written from the header layout in docs/reference/psp-protocol.md.
-- Use: tshark -X lua_script:wireshark/psp.lua -r capture.pcap
--  or copy it into Wireshark's personal Lua plugins folder.
-- Shows the header fields, the virtualization cookie, the bytes left in clear by the
-- crypt offset, the protected bytes and the 16-byte ICV.  It does not decrypt.

local psp = Proto("psp", "PSP Security Protocol")

local f = psp.fields
f.next_header = ProtoField.uint8("psp.next_header", "Next Header", base.DEC)
f.hdr_ext_len = ProtoField.uint8("psp.hdr_ext_len", "Header Extension Length", base.DEC)
f.reserved = ProtoField.uint8("psp.reserved", "Reserved", base.HEX, nil, 0xC0)
f.crypt_offset = ProtoField.uint8("psp.crypt_offset", "Crypt Offset (4-byte units)", base.DEC, nil, 0x3F)
f.s_bit = ProtoField.bool("psp.s", "S (sample)", 8, nil, 0x80)
f.d_bit = ProtoField.bool("psp.d", "D (drop)", 8, nil, 0x40)
f.version = ProtoField.uint8("psp.version", "Version", base.DEC,
    {[0] = "AES-GCM-128", [1] = "AES-GCM-256", [2] = "AES-GMAC-128", [3] = "AES-GMAC-256"}, 0x3C)
f.v_bit = ProtoField.bool("psp.v", "V (virtualization cookie present)", 8, nil, 0x02)
f.always_one = ProtoField.uint8("psp.always_one", "Always 1", base.DEC, nil, 0x01)
f.spi = ProtoField.uint32("psp.spi", "SPI", base.HEX)
f.key_phase = ProtoField.uint32("psp.spi.key_phase", "Key phase (master key)", base.DEC, nil, 0x80000000)
f.iv = ProtoField.uint64("psp.iv", "IV", base.HEX)
f.vc = ProtoField.bytes("psp.vc", "Virtualization Cookie")
f.clear = ProtoField.bytes("psp.clear", "Clear bytes (crypt offset)")
f.protected = ProtoField.bytes("psp.protected", "Protected payload")
f.icv = ProtoField.bytes("psp.icv", "ICV")

local expert_short = ProtoExpert.new("psp.short", "PSP packet shorter than header and ICV",
    expert.group.MALFORMED, expert.severity.ERROR)
local expert_bit = ProtoExpert.new("psp.always_one_clear", "Always-1 bit is 0",
    expert.group.MALFORMED, expert.severity.WARN)
psp.experts = {expert_short, expert_bit}

function psp.dissector(buffer, pinfo, tree)
    local length = buffer:len()
    pinfo.cols.protocol = "PSP"
    local subtree = tree:add(psp, buffer(), "PSP Security Protocol")
    if length < 32 then
        subtree:add_proto_expert_info(expert_short)
        return
    end
    local ext = buffer(1, 1):uint()
    local header_len = 8 + 8 * ext
    local flags = buffer(3, 1)
    subtree:add(f.next_header, buffer(0, 1))
    subtree:add(f.hdr_ext_len, buffer(1, 1))
    subtree:add(f.reserved, buffer(2, 1))
    subtree:add(f.crypt_offset, buffer(2, 1))
    subtree:add(f.s_bit, flags)
    subtree:add(f.d_bit, flags)
    subtree:add(f.version, flags)
    subtree:add(f.v_bit, flags)
    local one = subtree:add(f.always_one, flags)
    if bit.band(flags:uint(), 1) == 0 then one:add_proto_expert_info(expert_bit) end
    local spi = subtree:add(f.spi, buffer(4, 4))
    spi:add(f.key_phase, buffer(4, 4))
    subtree:add(f.iv, buffer(8, 8))
    if header_len + 16 > length then
        subtree:add_proto_expert_info(expert_short)
        return
    end
    if bit.band(flags:uint(), 2) ~= 0 and header_len >= 24 then
        subtree:add(f.vc, buffer(16, 8))
    end
    local clear = bit.band(buffer(2, 1):uint(), 0x3F) * 4
    local body = 16 -- the crypt offset counts from the end of the IV
    local protected_len = length - body - 16
    if clear > protected_len then clear = protected_len end
    if clear > 0 then subtree:add(f.clear, buffer(body, clear)) end
    if protected_len - clear > 0 then subtree:add(f.protected, buffer(body + clear, protected_len - clear)) end
    subtree:add(f.icv, buffer(length - 16, 16))
    pinfo.cols.info = string.format("PSP SPI=0x%08x IV=%s v%d", buffer(4, 4):uint(),
        tostring(buffer(8, 8):uint64():tohex()), bit.rshift(bit.band(flags:uint(), 0x3C), 2))
end

DissectorTable.get("udp.port"):add(1000, psp)
