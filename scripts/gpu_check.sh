#!/usr/bin/env bash
# GPU checks and benchmarks, run on a CUDA machine from the repository root.
#
#   bash scripts/gpu_check.sh STAGE...      stages: tests smoke loading loading3b e2e memory multi long fixtures savings table3b table7b offload kernels flashvsr flashvsr-ref dit fast wall tilestats uhd uhd-peak info
#
# tests    pytest -m gpu (parity on the GPU, bf16 bounds, GPU loading)
# smoke    real-size 3B / 7B DiT and VAE forward at a 1080p latent size (scripts/gpu_models_smoke.py)
# loading  host RAM while loading a real-size 7B fp16 file, VRAM of a 7B GGUF Q4_K (scripts/bench_loading.py)
# e2e      real-size 3B fp16 (synthesized): in-process per-phase benchmark and the CLI on a 66-frame
#          640x360 clip to 1080p and 720p (scripts/bench.py, scripts/watch_run.py)
# loading3b  the same for the real-size 3B files
# memory   the real-size VAE (synthesized) on one 33-frame 1088x1920 window: per-phase and per-module peaks, live
#          allocations at each peak by source line, bf16 noise scale (scripts/gpu_memory_timeline.py); with
#          MEMORY_BASELINE=some/vae.py (e.g. from git show REV:seedvr_cli/models/vae.py) that version runs first and
#          the current one is compared with it
# multi    the CLI on a clip of $MULTI_FRAMES (240) frames to 1080p, batch $MULTI_BATCH (21), on GPU 0 and on
#          GPUs 0,1; outputs compared
# long     the CLI on a clip of $LONG_FRAMES (3000) frames to 1080p h264 with audio on $LONG_DEVICES (0,1),
#          batch $LONG_BATCH (33), sampling the main process's RSS; Ctrl-C after $LONG_LIMIT (540) s if unfinished
# fixtures the float32 fixture tests and parity.py on this machine's CPU (another CPU's float noise)
# savings  the 66-frame 1080p CLI run (windows of 33 crossfaded over 3, two per chunk) with no memory saver, with BlockSwap of all blocks, and with
#          BlockSwap + VAE tiling: peak VRAM, fps, and the pictures compared (scripts/compare_videos.py)
# table3b / table7b  (TABLE_ROWS="8gb 12gb ..." for some rows only) the memory table of issue 12: no saver, fp8 + BlockSwap of every block, GGUF Q4_K_M +
#          BlockSwap + VAE tiling, the 8/12/16/24 GB card presets (--vram auto), for 7B also the 48/80 GB presets,
#          and for 3B a 2160p output within 24 GiB (scripts/memory_table.py; rows in $OUT/table/table.md)
# offload  issue 12's untiled rows: 3B and 7B fp16 with no saver and with --dit-offload-device cpu (the DiT in
#          host memory while the VAE codes), --vram auto at --max-vram 32, and 3B 1080p -> 2160p within 24 GiB on a
#          33-frame clip (rows in $OUT/table/table.md)
# kernels  the Triton kernels' GPU tests; GroupNorm + SiLU alone at the decoder's 1080p shapes, kernel vs PyTorch
#          (scripts/bench_group_norm.py); the real-size VAE (synthesized) on one 33-frame window to 1080p with the kernels
#          and with SEEDVR_KERNELS=off: per-phase ms/frame, TFLOP/s, peak VRAM, and the uint8 frames compared
#          (scripts/bench.py --vae-only --compare-plain)
# flashvsr the FlashVSR GPU tests (pytest -m gpu tests/test_flashvsr_models.py), then real-size random v1.1 files
#          (DiT + LQ projector bf16, TCDecoder, Wan2.1 VAE, a random [1, 512, 4096] prompt embedding) and one
#          CLI run per mode (tiny, tiny-long, full) at x4 on a $FV_FRAMES (45)-frame clip: 192x352 -> 768x1408
#          (the paper's size) and 480x270 -> 1920x1024 (1080p cropped to multiples of 128, as the reference
#          crops); fps and peak VRAM per row from the run's JSON summary (scripts/memory_table.py, rows in
#          $OUT/table/table.md), each row interrupted after $FV_LIMIT (55) s so the stage fits in about 6 minutes;
#          FV_SIZES and FV_MODES choose fewer rows, FV_FRAMES another clip length (rows are named SIZE_FRAMES)
# flashvsr-ref  the reference node's own pipeline (ComfyUI-FlashVSR_Ultra_Fast, exported to
#          .ref/ComfyUI-FlashVSR_Ultra_Fast: git -C MIRROR archive HEAD src nodes.py | tar -x -C that folder) on the
#          flashvsr stage's files and clips, per mode and size, int8 sparse_sage attention, bf16, x4, our noise
#          (scripts/flashvsr_reference.py; JSON rows in $OUT/flashvsr_ref/rows.jsonl: load_s apart, run_s, fps, peak
#          VRAM), each row interrupted after $FVREF_LIMIT (45) s; its pictures compared with ours
#          ($OUT/flashvsr_ref_compare.log): the flashvsr stage's outputs (run it first), or, for a checkout with
#          only the v1.0 LQ projector, our flashvsr-v1.0 modes at 352x192 run here; about 5 minutes
#          (FV_SIZES, FV_MODES and FV_FRAMES as for the flashvsr stage)
# fast     issue 13's rows: scripts/bench.py on the 66-frame 640x360 clip to 1080p (batch 33) for the 7B plain
#          (--attention sdpa) and fast (--attention auto --compile), the 3B fast; then the CLI's process wall on the
#          same clip, plain and fast (the compile cache filled by the bench), sampled by scripts/watch_run.py
# tilestats  VAE tiles sharing statistics against tiles on their own (--vae-tile-statistics shared|own): the 3B
#          1080p clip untiled, with 1024 px tiles shared and own (same savers otherwise: BlockSwap of all blocks,
#          --vram manual), the tiled outputs compared with the untiled one (scripts/compare_videos.py), and the 2160p
#          row (--max-vram 24) with own statistics, for the window fps against the uhd stage's shared default
# uhd      issue 12's 2160p row: 33 frames of 1920x1080 to 3840x2160 under --max-vram 24 (--vram auto), 3B fp16
# uhd-peak the same clip with --vram manual, no cap, and the savers --vram auto picks first at 24 GiB (or $UHD_FLAGS):
#          the peak the estimate should have predicted, and the phase it is reached in (--verbose; log uhd-peak.log)
# wall     the CLI's process wall on the fast stage's 66-frame clip to 1080p (3B fp16, batch 33), with --verbose
#          stage times: --attention sdpa; --attention auto --compile with a cold and then a warm compile cache;
#          $WALL_FLAGS (default --vae-conv-rings) added to the warm one (scripts/watch_run.py, logs fast_wall_*)
# info     seedvr info (versions, devices, free VRAM)
# dit      the DiT fast paths (issue 13): their GPU tests, then the real-size 3B (synthesized) on $DIT_FRAMES (33)
#          frames of the 640x360 clip to 1080p with --attention sdpa / flash / flex / flash --compile, and the fp8 3B
#          with --fp8-matmul, each against the plain path (scripts/bench.py --compare-plain: DiT ms/frame, PSNR)
#
# Missing pure-Python packages can be given as wheels in .whl/ (installed to /tmp/site).
# Logs go to $OUT (default /tmp/seedvr-gpu); synthesized checkpoints and clips to $WORK.
set -uo pipefail
OUT=${OUT:-/tmp/seedvr-gpu}
WORK=${WORK:-/tmp/seedvr-work}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD:$PWD/kernels
else
    export PYTHONPATH=$PWD:$PWD/kernels
fi
PY=${PY:-python3}
SEEDVR="$PY -m seedvr_cli"

synth() {  # synth VARIANT FORMAT FILE
    [ -f "$3" ] || $PY scripts/make_checkpoint.py --variant "$1" --format "$2" --out "$3" --device cuda
}

flashvsr_inputs() {  # the flashvsr stages' random real-size v1.1 files in $WORK/flashvsr-v1.1 and their clips
    local models="$WORK/flashvsr-v1.1" size
    [ -f "$models/diffusion_pytorch_model_streaming_dmd.safetensors" ] || \
        $PY scripts/make_checkpoint.py --variant flashvsr-v1.1 --format bf16 --out "$models" --device cuda
    synth tcdecoder fp32-pth "$models/TCDecoder.ckpt"
    synth wan2.1-vae fp32-pth "$models/Wan2.1_VAE.pth"
    # The published embedding's shape as the code reads it (UMT5 context of 512 tokens); values random.
    [ -f "$models/posi_prompt.pth" ] || $PY -c "import sys, torch; torch.manual_seed(0); \
torch.save(torch.randn(1, 512, 4096) * 0.1, sys.argv[1])" "$models/posi_prompt.pth"
    for size in ${FV_SIZES:-352x192 480x270}; do
        [ -f "$WORK/fv${FV_FRAMES:-45}_$size.mp4" ] || $PY scripts/make_clip.py "$WORK/fv${FV_FRAMES:-45}_$size.mp4" \
            --frames "${FV_FRAMES:-45}" --width "${size%x*}" --height "${size#*x}"
    done
}

for stage in "$@"; do
    echo "=== stage $stage ($(date -u +%H:%M:%S))"
    case "$stage" in
    tests)
        $PY -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" ;;
    smoke)
        $PY scripts/gpu_models_smoke.py --models 3b,7b,vae 2>&1 | tee "$OUT/smoke.log" ;;
    loading)
        $PY scripts/bench_loading.py --dir "$WORK/loading" 2>&1 | tee "$OUT/loading.log"
        rm -rf "$WORK/loading" ;;
    loading3b)
        $PY scripts/bench_loading.py --variant 3b --dir "$WORK/loading3b" 2>&1 | tee "$OUT/loading3b.log"
        rm -rf "$WORK/loading3b" ;;
    e2e)
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360 --audio
        for res in 1080 720; do
            $PY scripts/bench.py --model "$WORK/seedvr2_ema_3b_fp16.safetensors" --vae "$WORK/ema_vae_fp16.safetensors" \
                --input "$WORK/clip66.mp4" --frames 66 --resolution $res --batch-size 33 --json 2>&1 | tee "$OUT/bench_$res.log"
            $PY scripts/watch_run.py --json "$OUT/cli_$res.json" -- $SEEDVR upscale "$WORK/clip66.mp4" \
                -o "$WORK/out_$res.mp4" --overwrite --model "$WORK/seedvr2_ema_3b_fp16.safetensors" \
                --vae "$WORK/ema_vae_fp16.safetensors" --resolution $res --batch-size 33 --devices 0 2>&1 | tee "$OUT/cli_$res.log"
            $SEEDVR probe "$WORK/out_$res.mp4" 2>&1 | tee -a "$OUT/cli_$res.log"
        done ;;
    memory)
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        variants=()
        [ -n "${MEMORY_BASELINE:-}" ] && variants+=(--variant "before:impl=$MEMORY_BASELINE,detail=1")
        variants+=(--variant "current:detail=1")
        $PY scripts/gpu_memory_timeline.py --vae "$WORK/ema_vae_fp16.safetensors" --frames 33 --height 1088 --width 1920 \
            --repeats 3 --floor "${variants[@]}" --json "$OUT/memory.json" 2>&1 | grep -v '^{' | tee "$OUT/memory.log" ;;
    multi)
        frames=${MULTI_FRAMES:-240}
        batch=${MULTI_BATCH:-21}
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        $PY scripts/make_clip.py "$WORK/clip_multi.mp4" --frames "$frames" --width 640 --height 360 --audio
        for devs in 0 0,1; do
            tag=${devs/,/_}
            $PY scripts/watch_run.py --json "$OUT/multi_$tag.json" -- $SEEDVR upscale "$WORK/clip_multi.mp4" \
                -o "$WORK/multi_$tag.mkv" --overwrite --codec ffv1 --model "$WORK/seedvr2_ema_3b_fp16.safetensors" \
                --vae "$WORK/ema_vae_fp16.safetensors" --resolution 1080 --batch-size "$batch" --devices "$devs" \
                --log-format json 2>&1 | grep -v -E '"kind": "(chunk|write)"' | tee "$OUT/multi_$tag.log"
        done
        $PY scripts/compare_videos.py "$WORK/multi_0.mkv" "$WORK/multi_0_1.mkv" 2>&1 | tee "$OUT/multi_compare.log"
        ;;
    long)
        frames=${LONG_FRAMES:-3000}
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        $PY scripts/make_clip.py "$WORK/clip_long.mp4" --frames "$frames" --width 640 --height 360 --audio
        $PY scripts/watch_run.py --interval 2 --interrupt-after "${LONG_LIMIT:-540}" --json "$OUT/long.json" -- \
            $SEEDVR upscale "$WORK/clip_long.mp4" -o "$WORK/long.mp4" --overwrite \
            --model "$WORK/seedvr2_ema_3b_fp16.safetensors" --vae "$WORK/ema_vae_fp16.safetensors" \
            --resolution 1080 --batch-size "${LONG_BATCH:-33}" --devices "${LONG_DEVICES:-0,1}" --log-format json 2>&1 \
            | grep -v -E '"kind": "(chunk|write)"' | tee "$OUT/long.log"
        [ -f "$WORK/long.mp4" ] && $SEEDVR probe "$WORK/long.mp4" 2>&1 | tee -a "$OUT/long.log" ;;
    fixtures)
        # The float32 fixture tests and parity.py on this machine's CPU (CUDA hidden): another CPU's
        # float noise than the developers' (an H200 host is an AVX-512 Xeon). Needs the fixtures:
        # SEEDVR_SHARED_DIR, or ../shared beside the checkout.
        shared=${SEEDVR_SHARED_DIR:-../shared}
        { lscpu | grep -E 'Model name' ; $PY -c "import torch; print('torch', torch.__version__, 'CPU capability', torch.backends.cpu.get_cpu_capability())"; } 2>&1 | tee "$OUT/fixtures_cpu.log"
        CUDA_VISIBLE_DEVICES= $PY -m pytest -q -p no:cacheprovider -m "not gpu" tests/test_dit.py tests/test_vae.py \
            tests/test_tiling.py tests/test_pipeline_window.py tests/test_pipeline_parity.py tests/test_sampler.py \
            tests/test_color.py tests/test_rope.py tests/test_preprocess.py 2>&1 | tail -15 | tee -a "$OUT/fixtures_cpu.log"
        for fixture in dit vae pipeline; do
            CUDA_VISIBLE_DEVICES= $PY scripts/parity.py "$shared/fixtures/$fixture" 2>&1 | tail -2 | tee -a "$OUT/fixtures_cpu.log"
        done ;;
    savings)
        # The same 1080p run with each memory saver: peak VRAM (run summary), fps, and whether the
        # pictures changed (BlockSwap must not change them; tiling may, a little).
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360
        for setting in none swap32 swap32_tiled; do
            case $setting in
                none) extra="" ;;
                swap32) extra="--blocks-to-swap 32 --swap-io-components" ;;
                swap32_tiled) extra="--blocks-to-swap 32 --swap-io-components --vae-tiling on" ;;
            esac
            $PY scripts/watch_run.py --json "$OUT/savings_$setting.json" -- $SEEDVR upscale "$WORK/clip66.mp4" \
                -o "$WORK/savings_$setting.mkv" --overwrite --codec ffv1 --no-resume \
                --model "$WORK/seedvr2_ema_3b_fp16.safetensors" --vae "$WORK/ema_vae_fp16.safetensors" \
                --resolution 1080 --batch-size 33 --temporal-overlap 3 --chunk-windows 2 --devices 0 --log-format json $extra 2>&1 \
                | grep -v -E '"kind": "(chunk|write)"' | tee "$OUT/savings_$setting.log"
        done
        $PY scripts/compare_videos.py "$WORK/savings_none.mkv" "$WORK/savings_swap32.mkv" "$WORK/savings_swap32_tiled.mkv" \
            2>&1 | tee "$OUT/savings_compare.log" ;;
    table3b|table7b)
        # The memory table of issue 12 (docs/benchmarks.md): one CLI run per row on a 66-frame 640x360
        # clip to 1080p, batch 33 (card presets set it), FFV1 output; each row's numbers from
        # scripts/memory_table.py. table3b also upscales a 33-frame 1920x1080 clip to 2160p within 24 GiB.
        variant=${stage#table}
        blocks=$([ "$variant" = 7b ] && echo 36 || echo 32)
        synth "$variant" fp16 "$WORK/seedvr2_ema_${variant}_fp16.safetensors"
        wanted() {  # TABLE_ROWS="8gb 12gb ..." runs only those rows (default: all)
            [ -z "${TABLE_ROWS:-}" ] || [[ " $TABLE_ROWS " == *" $1 "* ]]
        }
        wanted fp8_swap && synth "$variant" fp8_e4m3fn "$WORK/seedvr2_ema_${variant}_fp8_e4m3fn.safetensors"
        wanted q4km_swap_tiled && synth "$variant" gguf-q4_k_m "$WORK/seedvr2_ema_${variant}-Q4_K_M.gguf"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        [ -f "$WORK/clip66.mp4" ] || $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360
        fp16="$WORK/seedvr2_ema_${variant}_fp16.safetensors"
        common=(--vae "$WORK/ema_vae_fp16.safetensors" --resolution 1080 --batch-size 33 --codec ffv1 --no-resume
                --overwrite --devices 0)
        row() {  # row NAME ARGS...
            local name=$1; shift
            wanted "$name" || return 0
            timeout "${ROW_LIMIT:-150}" $PY scripts/memory_table.py --row "${variant}_$name" --log-dir "$OUT/table" -- \
                "$@" 2>&1 | tee -a "$OUT/table_$variant.log"
        }
        if [ "$variant" = 7b ]; then
            nosave=(--profile 80gb); also48=(--profile 48gb)
        else
            nosave=(); also48=()
        fi
        row none "$WORK/clip66.mp4" -o "$WORK/t_none.mkv" --model "$fp16" "${common[@]}" "${nosave[@]}"
        [ "$variant" = 7b ] && row 48gb "$WORK/clip66.mp4" -o "$WORK/t_48.mkv" --model "$fp16" "${common[@]}" "${also48[@]}"
        row fp8_swap "$WORK/clip66.mp4" -o "$WORK/t_fp8.mkv" "${common[@]}" \
            --model "$WORK/seedvr2_ema_${variant}_fp8_e4m3fn.safetensors" --blocks-to-swap "$blocks" --swap-io-components
        row q4km_swap_tiled "$WORK/clip66.mp4" -o "$WORK/t_q4.mkv" "${common[@]}" \
            --model "$WORK/seedvr2_ema_${variant}-Q4_K_M.gguf" --blocks-to-swap "$blocks" --swap-io-components --vae-tiling on
        for card in 8 12 16 24; do
            row "${card}gb" "$WORK/clip66.mp4" -o "$WORK/t_$card.mkv" --model "$fp16" "${common[@]}" --profile "${card}gb"
        done
        if [ "$variant" = 3b ]; then
            [ -f "$WORK/clip1080.mp4" ] || $PY scripts/make_clip.py "$WORK/clip1080.mp4" --frames 33 --width 1920 --height 1080
            row 2160p_24gb "$WORK/clip1080.mp4" -o "$WORK/t_2160.mkv" --model "$fp16" --vae "$WORK/ema_vae_fp16.safetensors" \
                --resolution 2160 --batch-size 33 --codec ffv1 --no-resume --overwrite --devices 0 --max-vram 24
            [ -z "${TABLE_ROWS:-}" ] && $PY scripts/compare_videos.py "$WORK/t_none.mkv" "$WORK/t_fp8.mkv" "$WORK/t_8.mkv" \
                "$WORK/t_24.mkv" 2>&1 | tee "$OUT/table_${variant}_compare.log"
        fi
        cp "$OUT/table/table.md" "$OUT/table_all.md" 2>/dev/null ;;
    offload)
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth 7b fp16 "$WORK/seedvr2_ema_7b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        [ -f "$WORK/clip66.mp4" ] || $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360
        [ -f "$WORK/clip1080.mp4" ] || $PY scripts/make_clip.py "$WORK/clip1080.mp4" --frames 33 --width 1920 --height 1080
        common=(--vae "$WORK/ema_vae_fp16.safetensors" --batch-size 33 --codec ffv1 --no-resume --overwrite --devices 0)
        orow() {  # orow NAME ARGS...
            local name=$1; shift
            timeout "${ROW_LIMIT:-150}" $PY scripts/memory_table.py --row "$name" --log-dir "$OUT/table" -- \
                "$@" 2>&1 | tee -a "$OUT/offload.log"
        }
        for variant in 3b 7b; do
            model=(--model "$WORK/seedvr2_ema_${variant}_fp16.safetensors")
            orow "${variant}_none" "$WORK/clip66.mp4" -o "$WORK/o_none_$variant.mkv" "${model[@]}" "${common[@]}" \
                --resolution 1080 --vram manual
            orow "${variant}_dit_offload" "$WORK/clip66.mp4" -o "$WORK/o_off_$variant.mkv" "${model[@]}" "${common[@]}" \
                --resolution 1080 --vram manual --dit-offload-device cpu
            orow "${variant}_auto_32" "$WORK/clip66.mp4" -o "$WORK/o_auto_$variant.mkv" "${model[@]}" "${common[@]}" \
                --resolution 1080 --max-vram 32
            $PY scripts/compare_videos.py "$WORK/o_none_$variant.mkv" "$WORK/o_off_$variant.mkv" 2>&1 \
                | tee -a "$OUT/offload_compare.log"
        done
        orow 3b_2160p_24gb "$WORK/clip1080.mp4" -o "$WORK/o_2160.mkv" --model "$WORK/seedvr2_ema_3b_fp16.safetensors" \
            "${common[@]}" --resolution 2160 --max-vram 24
        cp "$OUT/table/table.md" "$OUT/table_all.md" 2>/dev/null ;;
    kernels)
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_kernels_group_norm.py 2>&1 | tee "$OUT/kernels_tests.log"
        $PY scripts/bench_group_norm.py --json 2>&1 | tee "$OUT/kernels_group_norm.log"
        $PY scripts/bench.py --vae "$WORK/ema_vae_fp16.safetensors" --vae-only --frames "${KERNELS_FRAMES:-33}" \
            --batch-size 33 --resolution 1080 --repeats "${KERNELS_REPEATS:-3}" --compare-plain --json 2>&1 \
            | tee "$OUT/kernels_bench.log" ;;
    flashvsr)
        $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_flashvsr_models.py 2>&1 | tee "$OUT/flashvsr_tests.log"
        flashvsr_inputs
        models="$WORK/flashvsr-v1.1"
        frames=${FV_FRAMES:-45}
        for size in ${FV_SIZES:-352x192 480x270}; do
            for mode in ${FV_MODES:-tiny tiny-long full}; do
                # Ctrl-C (the run stops cleanly and still reports) rather than a kill that would
                # leave the run's own process holding the GPU for the next row.
                $PY scripts/memory_table.py --row "flashvsr_${mode}_${size}_$frames" --log-dir "$OUT/table" \
                    --interrupt-after "${FV_LIMIT:-55}" -- \
                    "$WORK/fv${frames}_$size.mp4" -o "$WORK/fv_${mode}_$size.mkv" --model "flashvsr-v1.1-$mode" \
                    --model-dir "$models" --no-download --scale 4 --codec ffv1 --no-resume --overwrite --devices 0 \
                    2>&1 | tee -a "$OUT/flashvsr.log"
            done
        done
        [ -f "$WORK/fv_full_352x192.mkv" ] && $PY scripts/compare_videos.py "$WORK/fv_tiny_352x192.mkv" \
            "$WORK/fv_tiny-long_352x192.mkv" "$WORK/fv_full_352x192.mkv" 2>&1 | tee "$OUT/flashvsr_compare.log"
        cp "$OUT/table/table.md" "$OUT/table_all.md" 2>/dev/null ;;
    flashvsr-ref)
        ref=.ref/ComfyUI-FlashVSR_Ultra_Fast
        if [ ! -f "$ref/src/pipelines/flashvsr_tiny.py" ]; then
            echo "no $ref/src: export it first (git -C MIRROR archive HEAD src nodes.py | tar -x -C $ref)" \
                | tee "$OUT/flashvsr_ref.log"
            continue
        fi
        flashvsr_inputs
        models="$WORK/flashvsr-v1.1"
        # A checkout without v1.1's projector (lihaoyun6 at 9bd91d0) runs v1.0's: its pictures are then
        # compared with our v1.0 mode on the same files (small size only, for time), else with the
        # flashvsr stage's v1.1 outputs.
        ours=1.1
        grep -q "class Causal_LQ4x_Proj" "$ref/src/models/utils.py" || ours=1.0
        mkdir -p "$OUT/flashvsr_ref"
        rm -f "$OUT/flashvsr_ref/rows.jsonl" "$OUT/flashvsr_ref_compare.log"
        for size in ${FV_SIZES:-352x192 480x270}; do
            for mode in ${FV_MODES:-tiny tiny-long full}; do
                rm -f "$WORK/fvref_${mode}_$size.mkv"  # an interrupted row leaves none to compare
                # SIGINT: the driver still prints its JSON line (interrupted) and frees the GPU.
                timeout -s INT -k 30 "${FVREF_LIMIT:-45}" $PY scripts/flashvsr_reference.py --reference "$ref" \
                    --models "$models" --mode "$mode" --version "$ours" --noise seedvr --overwrite "$WORK/fv${FV_FRAMES:-45}_$size.mp4" \
                    -o "$WORK/fvref_${mode}_$size.mkv" --json "$OUT/flashvsr_ref/rows.jsonl" 2>&1 \
                    | tee -a "$OUT/flashvsr_ref.log"
                mine="$WORK/fv_${mode}_$size.mkv"
                if [ "$ours" = 1.0 ] && [ "$size" = 352x192 ]; then
                    mine="$WORK/fv-v1.0_${mode}_$size.mkv"
                    rm -f "$mine"
                    $PY scripts/memory_table.py --row "flashvsr-v1.0_${mode}_$size" --log-dir "$OUT/flashvsr_ref/ours" \
                        --interrupt-after "${FV_LIMIT:-55}" -- "$WORK/fv${FV_FRAMES:-45}_$size.mp4" -o "$mine" \
                        --model "flashvsr-v1.0-$mode" --model-dir "$models" --no-download --scale 4 --codec ffv1 \
                        --no-resume --overwrite --devices 0 2>&1 | tee -a "$OUT/flashvsr_ref.log"
                fi
                if [ -f "$WORK/fvref_${mode}_$size.mkv" ] && [ -f "$mine" ]; then
                    echo "--- $mode $size: the reference (v$ours projector) against $(basename "$mine")" \
                        | tee -a "$OUT/flashvsr_ref_compare.log"
                    $PY scripts/compare_videos.py "$WORK/fvref_${mode}_$size.mkv" "$mine" 2>&1 \
                        | tee -a "$OUT/flashvsr_ref_compare.log"
                fi
            done
        done
        [ -f "$OUT/flashvsr_ref/rows.jsonl" ] && $PY -c "import json, sys
print('| mode | input -> output | frames | projector | load s | warm-up s | run s | fps | peak VRAM GiB | interrupted |')
print('|---|---|---|---|---|---|---|---|---|---|')
for r in map(json.loads, open(sys.argv[1])):
    print(f\"| {r['mode']} | {r.get('input')} -> {r.get('output')} | {r.get('output_frames')} | {r.get('lq_proj')} | \"
          f\"{r.get('load_s')} | {r.get('warmup_s')} | {r.get('run_s')} | {r.get('fps')} | {r.get('peak_vram_gib')} | \"
          f\"{r['interrupted']} |\")" \
            "$OUT/flashvsr_ref/rows.jsonl" | tee "$OUT/flashvsr_ref/table.md" ;;
    info)
        $SEEDVR info 2>&1 | tee "$OUT/info.log" ;;
    dit)
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth 3b fp8_e4m3fn "$WORK/seedvr2_ema_3b_fp8_e4m3fn.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        [ -f "$WORK/clip66.mp4" ] || $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360
        $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_dit_fast_gpu.py 2>&1 | tee "$OUT/dit_tests.log"
        export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
        dit_bench() {  # dit_bench NAME MODEL FLAGS...
            local name=$1 model=$2; shift 2
            $PY scripts/bench.py --model "$model" --vae "$WORK/ema_vae_fp16.safetensors" --input "$WORK/clip66.mp4" \
                --frames "${DIT_FRAMES:-33}" --resolution 1080 --batch-size 33 --repeats "${DIT_REPEATS:-2}" \
                --compare-plain --json "$@" 2>&1 | tee "$OUT/dit_bench_$name.log"
        }
        fp16="$WORK/seedvr2_ema_3b_fp16.safetensors"
        dit_bench sdpa "$fp16" --attention sdpa
        dit_bench flash "$fp16" --attention flash
        dit_bench flex "$fp16" --attention flex
        dit_bench flash_compile "$fp16" --attention flash --compile
        dit_bench fp8_flash "$WORK/seedvr2_ema_3b_fp8_e4m3fn.safetensors" --attention flash --fp8-matmul ;;
    fast)
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth 7b fp16 "$WORK/seedvr2_ema_7b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        [ -f "$WORK/clip66.mp4" ] || $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360
        export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
        fast_bench() {  # fast_bench NAME VARIANT RESOLUTION FLAGS...
            local name=$1 variant=$2 res=$3; shift 3
            $PY scripts/bench.py --model "$WORK/seedvr2_ema_${variant}_fp16.safetensors" --vae "$WORK/ema_vae_fp16.safetensors" \
                --input "$WORK/clip66.mp4" --frames 66 --resolution "$res" --batch-size 33 --repeats 2 --json "$@" \
                2>&1 | tee "$OUT/fast_$name.log"
        }
        fast_bench 7b_plain 7b 1080 --attention sdpa --repeats 1
        fast_bench 7b_fast 7b 1080 --attention auto --compile
        fast_bench 3b_fast 3b 1080 --attention auto --compile
        # The CLI as a user runs it, start to file written, with the compile cache the bench filled.
        for flags in "--attention sdpa" "--attention auto --compile"; do
            tag=$(echo "$flags" | tr -d ' -')
            $PY scripts/watch_run.py --json "$OUT/fast_cli_$tag.json" -- $SEEDVR upscale "$WORK/clip66.mp4" \
                -o "$WORK/fast_$tag.mp4" --overwrite --no-resume --model "$WORK/seedvr2_ema_3b_fp16.safetensors" \
                --vae "$WORK/ema_vae_fp16.safetensors" --resolution 1080 --batch-size 33 --devices 0 $flags \
                2>&1 | tee "$OUT/fast_cli_$tag.log"
        done ;;
    wall)
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        [ -f "$WORK/clip66.mp4" ] || $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360
        export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor-wall"
        n=0
        for flags in "--attention sdpa" "--attention auto --compile" "--attention auto --compile" \
                     "--attention auto --compile ${WALL_FLAGS:---vae-conv-rings}"; do
            n=$((n + 1))
            $PY scripts/watch_run.py --json "$OUT/fast_wall_$n.json" -- $SEEDVR upscale "$WORK/clip66.mp4" \
                -o "$WORK/wall_$n.mp4" --overwrite --no-resume --model "$WORK/seedvr2_ema_3b_fp16.safetensors" \
                --vae "$WORK/ema_vae_fp16.safetensors" --resolution 1080 --batch-size 33 --devices 0 --verbose $flags \
                2>&1 | tee "$OUT/fast_wall_$n.log"
        done ;;
    tilestats)
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        [ -f "$WORK/clip66.mp4" ] || $PY scripts/make_clip.py "$WORK/clip66.mp4" --frames 66 --width 640 --height 360
        [ -f "$WORK/clip1080.mp4" ] || $PY scripts/make_clip.py "$WORK/clip1080.mp4" --frames 33 --width 1920 --height 1080
        models=(--model "$WORK/seedvr2_ema_3b_fp16.safetensors" --vae "$WORK/ema_vae_fp16.safetensors" --batch-size 33
                --codec ffv1 --no-resume --overwrite --devices 0)
        for row in untiled shared own; do
            savers=(--vram manual --blocks-to-swap 32 --swap-io-components)
            [ "$row" = untiled ] || savers+=(--vae-tiling on --vae-tile-size 1024 --vae-tile-overlap 128 --vae-tile-statistics "$row")
            timeout "${ROW_LIMIT:-150}" $PY scripts/memory_table.py --row "3b_1080p_tiles_$row" --log-dir "$OUT/table" -- \
                "$WORK/clip66.mp4" -o "$WORK/ts_$row.mkv" "${models[@]}" --resolution 1080 "${savers[@]}" 2>&1 | tee -a "$OUT/tilestats.log"
        done
        $PY scripts/compare_videos.py "$WORK/ts_untiled.mkv" "$WORK/ts_shared.mkv" "$WORK/ts_own.mkv" 2>&1 | tee -a "$OUT/tilestats.log"
        timeout "${ROW_LIMIT:-150}" $PY scripts/memory_table.py --row 3b_2160p_24gb_own --log-dir "$OUT/table" -- \
            "$WORK/clip1080.mp4" -o "$WORK/ts_2160_own.mkv" "${models[@]}" --resolution 2160 --max-vram 24 \
            --vae-tile-statistics own 2>&1 | tee -a "$OUT/tilestats.log"
        cp "$OUT/table/table.md" "$OUT/table_all.md" 2>/dev/null ;;
    uhd|uhd-peak)
        synth 3b fp16 "$WORK/seedvr2_ema_3b_fp16.safetensors"
        synth vae fp16 "$WORK/ema_vae_fp16.safetensors"
        [ -f "$WORK/clip1080.mp4" ] || $PY scripts/make_clip.py "$WORK/clip1080.mp4" --frames 33 --width 1920 --height 1080
        if [ "$stage" = uhd ]; then
            name=3b_2160p_24gb; memory=(--max-vram 24)
        else
            # What --vram auto picked first at 24 GiB before this session's changes (or $UHD_FLAGS), uncapped.
            name=3b_2160p_manual_uncapped
            read -r -a memory <<< "--vram manual ${UHD_FLAGS:---blocks-to-swap 32 --vae-tiling on --vae-tile-size 768 --dit-tiling on --dit-tile-size 2592}"
        fi
        timeout "${ROW_LIMIT:-300}" $PY scripts/memory_table.py --row "$name" --log-dir "$OUT/table" -- \
            "$WORK/clip1080.mp4" -o "$WORK/o_$name.mkv" --model "$WORK/seedvr2_ema_3b_fp16.safetensors" \
            --vae "$WORK/ema_vae_fp16.safetensors" --batch-size 33 --codec ffv1 --no-resume --overwrite --devices 0 \
            --resolution 2160 "${memory[@]}" --verbose 2>&1 | tee -a "$OUT/$stage.log"
        cp "$OUT/table/table.md" "$OUT/table_all.md" 2>/dev/null ;;
    *)
        echo "unknown stage $stage (tests smoke loading loading3b e2e memory multi long fixtures savings table3b table7b offload kernels flashvsr flashvsr-ref dit fast wall tilestats uhd uhd-peak info)"; exit 2 ;;
    esac
done
