"""The Parquet files stages exchange: their column schemas, in one place (README, "The run directory")."""

from __future__ import annotations

import pyarrow as pa

# RUN/sample/shards/*.parquet: one row per sampled response. Documented in README ("Sample shards").
SAMPLE_SCHEMA = pa.schema([
    ("question_id", pa.string()),          # id from the question file (or a hash of the question)
    ("question", pa.string()),             # question text as read
    ("answer", pa.string()),               # gold answer if the file had one ("" otherwise); unused by UPFT
    ("sample_index", pa.int64()),          # 0..n-1 when several samples per question are drawn
    ("kind", pa.string()),                 # "prefix" (first t tokens) or "full" (structure tuning)
    ("prompt", pa.string()),               # chat-formatted prompt exactly as sent to vLLM
    ("prompt_token_ids", pa.list_(pa.int64())),
    ("num_prompt_tokens", pa.int64()),
    ("train_messages", pa.string()),       # JSON chat messages the trainer uses (task template on prefix rows)
    ("task_template", pa.string()),        # the suffix added for training ("" on full rows)
    ("response_text", pa.string()),        # sampled text (decoded response_token_ids)
    ("response_token_ids", pa.list_(pa.int64())),
    ("num_response_tokens", pa.int64()),
    ("finish_reason", pa.string()),        # "length" (hit max_tokens) or "stop" (EOS / stop token)
    ("model", pa.string()),
    ("sampling_params", pa.string()),      # JSON: max_tokens, temperature, top_p, top_k, seed (per request)
    ("seed", pa.int64()),
])

# RUN/sample/rejected.parquet and friends: input rows that were not used, with the reason.
REJECTED_SCHEMA = pa.schema([
    ("source", pa.string()),   # file the row came from
    ("line", pa.int64()),      # 1-based line (JSONL) or row (Parquet) number
    ("reason", pa.string()),
    ("raw", pa.string()),      # the row as JSON, cut at 2,000 characters
])

# RUN/eval/<benchmark>.parquet: one row per graded question.
EVAL_SCHEMA = pa.schema([
    ("benchmark", pa.string()),
    ("question_id", pa.string()),
    ("sample_index", pa.int64()),           # 0..k-1 with sampled decoding (0 for greedy)
    ("question", pa.string()),              # as prompted (multiple choice: with its lettered options)
    ("prompt", pa.string()),
    ("output", pa.string()),
    ("extracted_answer", pa.string()),
    ("gold", pa.string()),
    ("correct", pa.bool_()),
    ("grade_status", pa.string()),          # ok | missing (no answer) | unparsable | timeout | error (upft_ray.grading)
    ("grade_error", pa.string()),           # the exception class when grading raised ("" otherwise)
    ("num_output_tokens", pa.int64()),
    ("finish_reason", pa.string()),
])

# RUN/eval*/judge/shards/*.parquet: one verdict of the optional LLM judge (eval.judge) per graded row.
JUDGE_SCHEMA = pa.schema([
    ("benchmark", pa.string()),
    ("question_id", pa.string()),
    ("sample_index", pa.int64()),
    ("judge_correct", pa.bool_()),          # the judge's TRUE/FALSE; null when it gave no verdict (status not ok)
    ("judge_status", pa.string()),          # ok | unparsable (no TRUE/FALSE report) | unanswered (the judge
                                            # engine could not answer: prompt too long, request failed)
    ("judge_answer", pa.string()),          # the student's final answer as the judge read it ("" when none)
    ("judge_output", pa.string()),          # the judge's report; for unanswered, the engine's reason
])

# RUN/eval/<benchmark>.parquet when eval.judge ran: EVAL_SCHEMA's columns, then the judge's, then the
# official evaluation's verdict (rule OR judge). Without a judge the file has EVAL_SCHEMA's columns only.
EVAL_JUDGED_SCHEMA = pa.schema(list(EVAL_SCHEMA) + list(JUDGE_SCHEMA)[3:] + [("correct_rule_or_judge", pa.bool_())])
