#!/usr/bin/env bash
# Creates the coaching-conversations table as infra/lambda-deployment.yaml defines it
# (provisioned 5/5, GSI user-index, TTL on expires_at, point-in-time recovery), with the
# AWS CLI. Works against DynamoDB Local too:
#   infra/dynamodb-table-creation.sh http://127.0.0.1:8000
# Without an argument it uses the CLI's configured region and account.
set -euo pipefail
endpoint=()
if [ $# -ge 1 ]; then endpoint=(--endpoint-url "$1"); fi
table="${DYNAMODB_TABLE_COACHING:-coaching-conversations}"

aws dynamodb create-table "${endpoint[@]}" \
  --table-name "$table" \
  --attribute-definitions \
      AttributeName=conversation_id,AttributeType=S \
      AttributeName=user_id,AttributeType=S \
      AttributeName=last_updated,AttributeType=S \
  --key-schema AttributeName=conversation_id,KeyType=HASH \
  --provisioned-throughput ReadCapacityUnits=5,WriteCapacityUnits=5 \
  --global-secondary-indexes '[{
      "IndexName": "user-index",
      "KeySchema": [
        {"AttributeName": "user_id", "KeyType": "HASH"},
        {"AttributeName": "last_updated", "KeyType": "RANGE"}
      ],
      "Projection": {"ProjectionType": "ALL"},
      "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
    }]' \
  --sse-specification Enabled=true

aws dynamodb wait table-exists "${endpoint[@]}" --table-name "$table"
aws dynamodb update-time-to-live "${endpoint[@]}" --table-name "$table" \
  --time-to-live-specification Enabled=true,AttributeName=expires_at
aws dynamodb update-continuous-backups "${endpoint[@]}" --table-name "$table" \
  --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true || \
  echo "point-in-time recovery not available here (DynamoDB Local); enable it in AWS" >&2
echo "created $table"
