"""Write the two small lm-evaluation-harness tasks' data from the shipped model's held-out skill questions (the test split):
`ock_skills_gen.jsonl` (prompt, answer: generate and compare) and `ock_skills_mc.jsonl` (prompt, four answers of the
same skill, the index of the right one). Run from anywhere: `python tests/lm_eval_tasks/make_data.py`."""
import json, random
from pathlib import Path
from openchatkit.synthetic import skill_examples

def main(n_gen=8, n_mc=16, seed=0, here=Path(__file__).parent):
    ex = skill_examples(max(n_gen, n_mc) * 4, seed=seed, split='test')
    gen = [{'prompt': e['prompt'], 'answer': e['answer'], 'skill': e['skill']} for e in ex[:n_gen]]
    r, mc = random.Random(seed), []
    for e in ex[:n_mc]:
        others = list(dict.fromkeys(x['answer'] for x in ex if x['skill'] == e['skill'] and x['answer'] != e['answer']))
        choices = r.sample(others, 3) + [e['answer']]
        r.shuffle(choices)
        mc.append({'prompt': e['prompt'], 'choices': choices, 'label': choices.index(e['answer']), 'skill': e['skill']})
    for name, rows in (('ock_skills_gen', gen), ('ock_skills_mc', mc)):
        (here/f'{name}.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in rows))

if __name__ == '__main__': main()
