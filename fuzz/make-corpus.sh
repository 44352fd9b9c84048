#!/bin/sh
# make-corpus.sh DIR: write small valid safetensors files into DIR, the seed
# corpus of fuzz_safetensors (every dtype, metadata, scalars, empty tensors,
# several tensors, header padding).
set -eu
LC_ALL=C
export LC_ALL
dir=${1:?usage: make-corpus.sh DIR}
mkdir -p "$dir"

# st NAME HEADER DATABYTES: 8-byte little-endian header length, the header,
# then DATABYTES bytes of data (a repeating pattern).
st() {
	name=$1 header=$2 nbytes=$3
	len=${#header}
	{
		i=0
		while [ $i -lt 8 ]; do
			printf "\\$(printf '%03o' $(( (len >> (8 * i)) & 255 )))"
			i=$((i + 1))
		done
		printf '%s' "$header"
		i=0
		while [ $i -lt "$nbytes" ]; do
			printf "\\$(printf '%03o' $(( (i * 37 + 11) & 255 )))"
			i=$((i + 1))
		done
	} > "$dir/$name"
}

st f32.st '{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' 16
st f16-meta.st '{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}}' 6
st bf16.st '{"x":{"dtype":"BF16","shape":[1,2,2],"data_offsets":[0,8]}}' 8
st i64.st '{"position_ids":{"dtype":"I64","shape":[1,4],"data_offsets":[0,32]}}' 32
st ints.st '{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I16","shape":[2],"data_offsets":[8,12]},"c":{"dtype":"I8","shape":[3],"data_offsets":[12,15]},"d":{"dtype":"U8","shape":[1],"data_offsets":[15,16]}}' 16
st bool-f64.st '{"m":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]},"z":{"dtype":"F64","shape":[1],"data_offsets":[4,12]}}' 12
st scalar.st '{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}' 4
st empty-tensor.st '{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"f":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' 4
st empty.st '{}' 0
st padded.st '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}       ' 4
st names.st '{"model.diffusion_model.input_blocks.0.0.weight":{"dtype":"F16","shape":[2,1,1,1],"data_offsets":[0,4]},"first_stage_model.encoder.conv_in.bias":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},"__metadata__":{"a":"b","c":"\u00e9"}}' 8
st unordered.st '{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' 8
