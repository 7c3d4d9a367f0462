# Sends N publishes over one keep-alive connection: python3 publish.py PORT CHANNEL N
import http.client, json, sys
port, channel, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": "Bearer bench-api-key-0123456789", "Content-Type": "application/json"}
for i in range(n):
    body = json.dumps({"channel": channel, "type": "stock_update", "data": {"sku": "A-1", "n": i}})
    conn.request("POST", "/api/v1/publish", body, headers)
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
