"""Warms a freshly started DynamoDB Local before the tests: its JVM compiles the request paths
the suite uses (transactions, queries, batch reads) on a throwaway table, so the first test to
send a burst meets the steady DynamoDB Local the rest of the suite meets, not one still
compiling (a cold one answered a burst of 50 admissions about a second later here).

    python3 scripts/warm-dynamodb-local.py PORT [SECONDS]

Standard library only; DynamoDB Local checks that a request is signed, not the signature.
"""
import http.client
import json
import sys
import time

port = int(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
table = f"warm-up-{int(time.time() * 1000)}"
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
auth = ("AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64)


def call(op, body):
    conn.request("POST", "/", json.dumps(body), {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": f"DynamoDB_20120810.{op}",
        "X-Amz-Date": "20260101T000000Z",
        "Authorization": auth,
    })
    answer = conn.getresponse()
    text = answer.read()
    if answer.status != 200 and op in ("CreateTable", "DeleteTable"):
        sys.exit(f"warm-dynamodb-local: {op} answered {answer.status}: {text[:200]!r}")
    return answer.status


call("CreateTable", {
    "TableName": table, "BillingMode": "PAY_PER_REQUEST",
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
})
started, n = time.monotonic(), 0
while time.monotonic() - started < seconds:
    user = f"u{n % 20}"
    call("TransactWriteItems", {"TransactItems": [
        {"Update": {"TableName": table, "Key": {"pk": {"S": user}, "sk": {"S": "quota"}},
                    "UpdateExpression": "ADD #c :one", "ConditionExpression": "attribute_not_exists(#c) OR #c < :max",
                    "ExpressionAttributeNames": {"#c": "count"},
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": "1000000"}}}},
        {"Put": {"TableName": table, "Item": {"pk": {"S": user}, "sk": {"S": f"turn-{n:08d}"}, "text": {"S": "warm " * 40}},
                 "ConditionExpression": "attribute_not_exists(pk)"}},
    ]})
    call("Query", {"TableName": table, "KeyConditionExpression": "pk = :u", "ScanIndexForward": False, "Limit": 20,
                   "ExpressionAttributeValues": {":u": {"S": user}}})
    call("BatchGetItem", {"RequestItems": {table: {"Keys": [{"pk": {"S": user}, "sk": {"S": "quota"}}]}}})
    call("GetItem", {"TableName": table, "Key": {"pk": {"S": user}, "sk": {"S": "quota"}}, "ConsistentRead": True})
    n += 1
call("DeleteTable", {"TableName": table})
print(f"DynamoDB Local warmed: {n} rounds of a transaction, a query and two reads in {time.monotonic() - started:.1f} s", file=sys.stderr)
