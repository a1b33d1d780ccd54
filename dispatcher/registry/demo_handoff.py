"""The demo county's phones and hand-off facts: each home's fixed line, residents'
mobiles, their medications, allergies and how to get in.

Drawn from a Random of their own (seeded from the county's seed), so adding them left
every other draw of ``dispatcher.registry.demo_county`` (and so the county the tests
know) exactly as it was; the same seed always gives the same facts.
"""

from __future__ import annotations

import random

from dispatcher.registry.demo_names import MOBILE_PREFIXES, SURNAMES
from dispatcher.registry.schemas import HomeRow, ResidentRow

_SALT = 12  # schema 0012 brought these fields

HOME_LINE_SHARE = 0.8  # most homes keep a fixed line (座机)

# What a nurse would write for a condition: one is picked per condition, when taken.
MEDICATIONS: dict[str, tuple[str, ...]] = {
    "高血压": ("硝苯地平缓释片 20mg 每日一次", "氨氯地平 5mg 每日一次", "缬沙坦 80mg 每日一次"),
    "糖尿病": ("二甲双胍 0.5g 每日三次，随餐", "胰岛素 早晚餐前皮下注射", "格列美脲 2mg 每日早餐前"),
    "冠心病": ("阿司匹林肠溶片 100mg 每日一次", "硝酸甘油片 随身备用，胸痛时舌下含服"),
    "骨质疏松": ("碳酸钙D3片 每日一次",),
    "关节炎": ("塞来昔布 200mg 疼痛时服",),
    "慢性阻塞性肺病": ("沙美特罗替卡松吸入剂 每日两次", "家中有制氧机，夜间吸氧"),
    "白内障": ("妥布霉素滴眼液 每日三次",),
    "脑梗后遗症": ("氯吡格雷 75mg 每日一次", "阿托伐他汀 20mg 每晚一次"),
    "阿尔茨海默病": ("多奈哌齐 5mg 每晚一次",),
    "帕金森病": ("多巴丝肼片 每日三次",),
}
ALLERGIES = ("青霉素", "头孢类抗生素", "磺胺类药物", "阿司匹林", "碘造影剂", "海鲜", "花粉")
ACCESS_NOTES = (
    "钥匙在邻居{neighbour}阿姨家 ({door})",
    "门口密码箱（电表箱旁），密码在社区站登记本上",
    "门口密码箱，密码请电话问子女",
    "儿子住同小区 {building} 号楼 {door}，有备用钥匙",
    "备用钥匙交物业值班室保管",
    "家里养狗，进门前先喊人，狗拴在院里",
    "六楼无电梯，担架需从楼梯抬",
    "单元门禁按 {door} 呼叫，老人耳背要多按几次",
    "院门常从里面插着，可从东侧小门进",
    "夜间反锁，找隔壁{neighbour}家开门 ({door})",
)


def _mobile(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def _access(rng: random.Random) -> str:
    door = f"{rng.randint(1, 6)}0{rng.randint(1, 4)}"
    template = rng.choice(ACCESS_NOTES)
    return template.format(neighbour=rng.choice(SURNAMES), door=door, building=rng.randint(1, 12))


def _medications(rng: random.Random, conditions: list[str]) -> str:
    taken = [rng.choice(MEDICATIONS[c]) for c in conditions if c in MEDICATIONS and rng.random() < 0.85]
    return "；".join(taken)


def _allergies(rng: random.Random, resident: ResidentRow) -> str:
    if "青霉素过敏" in resident.notes:  # the older notes already say so
        return "青霉素"
    if rng.random() < 0.15:
        return "、".join(sorted(rng.sample(ALLERGIES, rng.choice((1, 1, 1, 2)))))
    return ""


def _resident(rng: random.Random, resident: ResidentRow) -> ResidentRow:
    # the frail seldom carry a phone of their own
    mobile = _mobile(rng) if rng.random() < (0.6 if resident.capacity_level <= 2 else 0.2) else ""
    medications = _medications(rng, resident.conditions)
    allergies = _allergies(rng, resident)
    access = _access(rng) if rng.random() < (0.7 if resident.living_alone else 0.35) else ""
    return resident.model_copy(
        update={"phone": mobile, "medications": medications, "allergies": allergies, "access_notes": access}
    )


def with_handoff(
    seed: int, homes: list[HomeRow], residents: list[ResidentRow]
) -> tuple[list[HomeRow], list[ResidentRow]]:
    """The homes with their fixed lines and the residents with their mobiles and hand-off
    facts, in the same order."""
    rng = random.Random(seed * 100 + _SALT)
    lined = [
        h.model_copy(update={"phone": f"0377-6{rng.randrange(10**7):07d}"})
        if rng.random() < HOME_LINE_SHARE
        else h
        for h in homes
    ]
    return lined, [_resident(rng, r) for r in residents]
