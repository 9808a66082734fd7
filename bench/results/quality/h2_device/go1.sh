Q=(python3 /root/code/bench/quality.py --models minilm-l6 --full-models "" --threads 1 --holdout 500 --seeds 0,1,2)
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import torch, transformers, peft, pydantic; print(torch.__version__, transformers.__version__, peft.__version__)"
T=sst2,cola,mrpc,rte,stsb,file:rte
timeout 520 "${Q[@]}" --tasks $T --methods lora --jobs 6 --work /root/w/lora --out $OUT/lora_holdout.json --label "h2-rte LoRA held-out" > /root/w/lora.log 2>&1 &
timeout 520 "${Q[@]}" --tasks $T --sweep /root/m/sweep1.json --jobs 10 --work /root/w/sweep1 --out $OUT/sweep1.json --label "h2-rte sweep1 held-out" > /root/w/sweep1.log 2>&1 &
wait
tail -5 /root/w/lora.log /root/w/sweep1.log
ls /root/w/lora /root/w/sweep1 | grep -c json
tar czf $OUT/runs1.tgz -C /root/w lora sweep1 lora.log sweep1.log
