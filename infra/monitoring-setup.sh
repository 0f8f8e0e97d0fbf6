#!/usr/bin/env bash
# Creates the four alarms and the dashboard of infra/lambda-deployment.yaml with the AWS CLI,
# for an account where the stack's monitoring is managed separately.
#   infra/monitoring-setup.sh STACK_NAME SNS_TOPIC_ARN
# The stack deploys the same alarms and dashboard itself; use one or the other.
set -euo pipefail
stack="$1"; topic="$2"
region="$(aws configure get region)"
account="$(aws sts get-caller-identity --query Account --output text)"
here="$(cd "$(dirname "$0")" && pwd)"

alarm() { # name metric statistic period threshold description
  local stat_args=(--statistic "$3")
  case "$3" in p*) stat_args=(--extended-statistic "$3");; esac
  aws cloudwatch put-metric-alarm --alarm-name "$stack-$1" --alarm-description "$6" \
    --namespace GolfCoach --metric-name "$2" --dimensions Name=Service,Value=coaching-chat \
    "${stat_args[@]}" --period "$4" --evaluation-periods 1 --threshold "$5" \
    --comparison-operator GreaterThanThreshold --treat-missing-data notBreaching \
    --alarm-actions "$topic"
}
alarm HighTokenUsage TokensUsed Sum 3600 10000 "More than 10,000 model tokens in an hour."
alarm HighErrorRate ErrorRate Average 300 5 "More than 5% of requests answered with a server error."
alarm SlowResponses ResponseTime p95 300 5000 "The 95th percentile of response time above 5 seconds."
alarm DailyCostLimit CostPerDay Sum 86400 100 "Model spend above \$100 in a day."

body="$(sed -e "s/\${AWS::Region}/$region/g" -e "s/\${AWS::AccountId}/$account/g" -e "s/\${AWS::StackName}/$stack/g" "$here/cloudwatch-dashboard.json")"
aws cloudwatch put-dashboard --dashboard-name "$stack-coaching" --dashboard-body "$body"
echo "alarms and dashboard $stack-coaching created in $region"
