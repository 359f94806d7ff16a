"""The README's fuzzing table from Tests/Fuzz/log.tsv (one line per Tools/fuzz.sh run): executions per target (without
and with AddressSanitizer), the volume the hostile-input contract asks for, hours, the committed corpus (inputs and
KB) and findings. Standard library only.

    python3 Tools/fuzz_table.py
"""
import collections
import csv
import os

CORE = {"safetensors", "json", "pytorch", "npz", "gguf", "bundle"}  # 10^7 executions each; 10^6 for the others
ORDER = ["safetensors", "index", "json", "pytorch", "npz", "gguf", "bundle", "hdf5", "hdf5-inprocess", "png", "jpeg",
         "namemap", "policy", "lora", "record", "tokenizer"]


def millions(n):
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.0f} k" if n >= 1e3 else str(n)


def main():
    plain, asan = collections.Counter(), collections.Counter()
    seconds, findings = collections.Counter(), collections.Counter()
    with open("Tests/Fuzz/log.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            t = row["target"]
            (asan if "address" in row["sanitizers"] else plain)[t] += int(row["executions"])
            seconds[t] += int(row["seconds"])
            findings[t] += int(row["findings"])
    print("| target | executions (no ASan + ASan) | target volume | hours | corpus inputs (KB) | findings |")
    print("|---|---|---|---|---|---|")
    for t in ORDER:
        total = plain[t] + asan[t]
        goal = 10_000_000 if t in CORE else 1_000_000
        folder = f"Tests/Fuzz/corpus/{t}"
        files = os.listdir(folder) if os.path.isdir(folder) else []
        kb = sum(os.path.getsize(os.path.join(folder, x)) for x in files) // 1024
        met = "met" if total >= goal else "**not met**"
        print(f"| {t} | {millions(total)} ({millions(plain[t])} + {millions(asan[t])}) | {goal // 10**6}×10⁶: {met} | "
              f"{seconds[t] / 3600:.2f} | {len(files)} ({kb}) | {findings[t]} |")


if __name__ == "__main__":
    main()
