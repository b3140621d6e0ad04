#!/usr/bin/env python3
"""Readiness probes for the test services, speaking their wire protocols directly.

    probe.py kafka HOST:PORT   exits 0 once the broker answers a Metadata request with >= 1 broker
    probe.py cql HOST:PORT     exits 0 once `SELECT release_version FROM system.local` returns a row

Each prints what it learned (broker count, Cassandra release) on success and the reason on failure.
Only the Python standard library is used, so the probes run before anything is built.
"""

import socket
import struct
import sys

TIMEOUT_SECS = 3.0


def recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def kafka_request(sock, api_key, api_version, correlation_id, body):
    client_id = b"quiver-probe"
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    response = recv_exact(sock, size)
    (got_correlation,) = struct.unpack(">i", response[:4])
    if got_correlation != correlation_id:
        raise ValueError(f"correlation id {got_correlation}, expected {correlation_id}")
    return response[4:]


def probe_kafka(host, port):
    api_versions_key, metadata_key = 18, 3
    with socket.create_connection((host, port), timeout=TIMEOUT_SECS) as sock:
        # ApiVersions v0 tells which Metadata versions this broker still speaks
        # (Kafka 4 dropped the oldest ones).
        body = kafka_request(sock, api_versions_key, 0, 1, b"")
        error_code, count = struct.unpack(">hi", body[:6])
        if error_code != 0:
            raise ValueError(f"ApiVersions error code {error_code}")
        metadata_range = None
        for index in range(count):
            key, low, high = struct.unpack(">hhh", body[6 + 6 * index: 12 + 6 * index])
            if key == metadata_key:
                metadata_range = (low, high)
        if metadata_range is None:
            raise ValueError("broker does not offer the Metadata API")
        # v4..v8 share one non-flexible layout: a null topic array means "all topics".
        version = max(4, metadata_range[0])
        if version > min(8, metadata_range[1]):
            raise ValueError(f"no Metadata version in 4..8 offered, broker has {metadata_range}")
        body = kafka_request(sock, metadata_key, version, 2, struct.pack(">ib", -1, 0))
        # throttle_time_ms, then the brokers array.
        (broker_count,) = struct.unpack(">i", body[4:8])
        if broker_count < 1:
            raise ValueError("metadata lists no broker yet")
        return f"kafka ready: metadata v{version} lists {broker_count} broker(s)"


def cql_frame(opcode, stream, body):
    return struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body


def cql_read_frame(sock):
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", recv_exact(sock, 9))
    return opcode, recv_exact(sock, length)


def cql_error(body):
    code, length = struct.unpack(">iH", body[:6])
    return f"CQL error 0x{code:04x}: {body[6:6 + length].decode(errors='replace')}"


def probe_cql(host, port):
    opcode_error, opcode_startup, opcode_ready, opcode_query, opcode_result = 0x00, 0x01, 0x02, 0x07, 0x08
    with socket.create_connection((host, port), timeout=TIMEOUT_SECS) as sock:
        key, value = b"CQL_VERSION", b"3.0.0"
        startup = struct.pack(">HH", 1, len(key)) + key + struct.pack(">H", len(value)) + value
        sock.sendall(cql_frame(opcode_startup, 1, startup))
        opcode, body = cql_read_frame(sock)
        if opcode == opcode_error:
            raise ValueError(cql_error(body))
        if opcode != opcode_ready:
            raise ValueError(f"unexpected reply to STARTUP, opcode {opcode}")

        query = b"SELECT release_version FROM system.local"
        consistency_one = 0x0001
        sock.sendall(cql_frame(opcode_query, 2, struct.pack(">i", len(query)) + query + struct.pack(">HB", consistency_one, 0)))
        opcode, body = cql_read_frame(sock)
        if opcode == opcode_error:
            raise ValueError(cql_error(body))
        if opcode != opcode_result:
            raise ValueError(f"unexpected reply to QUERY, opcode {opcode}")
        kind, flags, column_count = struct.unpack(">iii", body[:12])
        if kind != 2:
            raise ValueError(f"result kind {kind}, expected rows")
        offset = 12
        global_table_spec = flags & 0x0001
        if global_table_spec:
            for _ in range(2):
                (length,) = struct.unpack(">H", body[offset:offset + 2])
                offset += 2 + length
        for _ in range(column_count):
            if not global_table_spec:
                for _ in range(2):
                    (length,) = struct.unpack(">H", body[offset:offset + 2])
                    offset += 2 + length
            (length,) = struct.unpack(">H", body[offset:offset + 2])
            offset += 2 + length
            offset += 2  # a native type id; release_version is varchar, which has no parameters
        (row_count,) = struct.unpack(">i", body[offset:offset + 4])
        offset += 4
        if row_count < 1:
            raise ValueError("system.local returned no row")
        (length,) = struct.unpack(">i", body[offset:offset + 4])
        release = body[offset + 4: offset + 4 + length].decode()
        return f"cql ready: release_version {release}"


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("kafka", "cql"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, _, port = sys.argv[2].rpartition(":")
    probe = probe_kafka if sys.argv[1] == "kafka" else probe_cql
    try:
        print(probe(host, int(port)))
        return 0
    except (OSError, ValueError, struct.error) as error:
        print(f"{sys.argv[1]} not ready at {sys.argv[2]}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
