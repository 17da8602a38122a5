#!/usr/bin/env bash
# make demo: the main job on the embedded default. Until the judging daemon exists it shows the
# foundation at work on the bundled models: inspect a real trained LLaMA (stories260K, HF layout)
# and a JudgeLM-shaped checkpoint (sharded bf16 PyTorch .bin), then tokenize a JudgeLM pairwise
# prompt with the LLaMA tokenizer and decode it back byte for byte.
set -euo pipefail
bindir=${1:-bin}
cd "$(dirname "$0")/.."
ctl="$bindir/judgectl"

echo "== judgectl inspect tests/fixtures/stories260K-hf"
"$ctl" inspect tests/fixtures/stories260K-hf | sed -n '1,6p;/^tokenizer/p;/^check/p'

judgelm_like=tests/fixtures/tiny/v32k-mha-untied-bf16-bin-sharded
if [ -d "$judgelm_like" ]; then
    echo; echo "== judgectl inspect $judgelm_like (the JudgeLM-7B file layout, in miniature)"
    "$ctl" inspect "$judgelm_like" | sed -n '1,4p;/^tokenizer/p;/^check/p'
fi

prompt=$(mktemp)
trap 'rm -f "$prompt"' EXIT
# A JudgeLM pairwise prompt (research/judgelm.md section 1.3) around a sample question.
printf '%s\n%s' "You are a helpful and precise assistant for checking the quality of the answer." \
"[Question]
What is the capital of France? Answer in one word, then add </s> to end.

[The Start of Assistant 1's Answer]
Paris. </s>

[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
Lyon 🇫🇷

[The End of Assistant 2's Answer]

[System]
We would like to request your feedback on the performance of two AI assistants in response to the user question displayed above.
Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.
Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space. In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in which the responses were presented does not affect your judgment.

### Response:" > "$prompt"

tokenizer=tests/fixtures/tokenizer/llama/tokenizer.model
echo; echo "== judgectl tokenize --tokenizer $tokenizer < judge prompt ($(wc -c <"$prompt") bytes)"
ids=$("$ctl" tokenize --tokenizer "$tokenizer" <"$prompt")
n=$(wc -w <<<"$ids")
echo "$n tokens: $(cut -d' ' -f1-16 <<<"$ids") ..."
echo "the answer's literal '</s>' stays text: eos id 2 appears $(tr ' ' '\n' <<<"$ids" | grep -cx 2 || true) times"
echo; echo "== judgectl detokenize (round trip)"
if "$ctl" detokenize --tokenizer "$tokenizer" <<<"$ids" | cmp -s - "$prompt"; then
    echo "decoded text is byte-identical to the prompt"
else
    echo "round trip FAILED"; exit 1
fi

echo; echo "== judgectl generate --model tests/fixtures/stories260K-hf (CPU engine, greedy)"
"$ctl" generate --model tests/fixtures/stories260K-hf --prompt "Once upon a time" \
    --max-new-tokens 80 --log-level warn
echo; echo
echo "== the same with JudgeLM's sampling (--judgelm: temperature 0.2, top-k 50, seed 1)"
"$ctl" generate --model tests/fixtures/stories260K-hf --prompt "Once upon a time" \
    --max-new-tokens 80 --judgelm --seed 1 --log-level warn
echo

echo; echo "== judgectl run: a JudgeLM pairwise job, both answer orders, on 8 PandaLM samples"
work=$(mktemp -d)
trap 'rm -f "$prompt"; rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import json, sys
rows = json.load(open("tests/fixtures/pandalm/testset-v1.json"))[:8]
with open(f"{sys.argv[1]}/samples.json", "w") as f:
    json.dump(rows, f)
PY
cat > "$work/job.yaml" <<YAML
kind: judge
name: demo
model: $PWD/tests/fixtures/stories260K-hf
input: samples.json
input_format: pandalm
mode: pair
swap: both
output: fast
max_new_tokens: 8
labels: $PWD/tests/fixtures/pandalm/testset-v1.json
output_path: judgments.jsonl
YAML
echo "(stories260K is a story model, not a judge: its score lines do not parse, so every"
echo " judgment counts as a tie; the pipeline is what this shows)"
"$ctl" run "$work/job.yaml" --context 2048 --log-level warn 2>&1 | grep -v "WARN"
python3 - "$work/judgments.jsonl" <<'PY'
import json, sys
rec = json.loads(open(sys.argv[1]).readline())
print("first record:", {k: rec[k] for k in ("idx", "pred_id", "pred_text", "scores",
                                              "pred_text_swapped") if k in rec})
PY
