"""GB/T 4754-2017 industry names for the codes the bundled samples and golden portfolios use.

Source: GB/T 4754-2017 《国民经济行业分类》 (Industrial classification for national economic
activities), National Bureau of Statistics / SAC, in force 2017-10-01, amendment No. 1 of 2019
(status: official). The Chinese names are the standard's; the English names are this project's
translation (status: secondary). Only the codes that ``ruleengine sample`` and the golden
portfolios produce are listed, plus the manufacturing divisions 13-43 and the road-transport
division 54; a full classification may replace this table later.

Codes in the data that are not classes of the 2017 edition (``1310``, ``1810``, ``5430`` are
2011-edition classes that the 2017 edition split) are shown with the name of their 3-digit group
and marked ``group``.
"""

from __future__ import annotations

SOURCE = {
    "zh": "GB/T 4754-2017《国民经济行业分类》(official)",
    "en": "GB/T 4754-2017 Industrial classification for national economic activities (official)",
}

# 2-digit divisions (门类 C 制造业 13-43; 门类 G 54)
DIVISIONS: dict[str, tuple[str, str]] = {
    "13": ("农副食品加工业", "Processing of food from agricultural products"),
    "14": ("食品制造业", "Manufacture of foods"),
    "15": ("酒、饮料和精制茶制造业", "Manufacture of liquor, beverages and refined tea"),
    "16": ("烟草制品业", "Manufacture of tobacco"),
    "17": ("纺织业", "Manufacture of textiles"),
    "18": ("纺织服装、服饰业", "Manufacture of textile wearing apparel and clothing"),
    "19": ("皮革、毛皮、羽毛及其制品和制鞋业", "Manufacture of leather, fur, feather and footwear"),
    "20": ("木材加工和木、竹、藤、棕、草制品业", "Processing of timber; wood, bamboo, rattan, palm and straw products"),
    "21": ("家具制造业", "Manufacture of furniture"),
    "22": ("造纸和纸制品业", "Manufacture of paper and paper products"),
    "23": ("印刷和记录媒介复制业", "Printing and reproduction of recording media"),
    "24": (
        "文教、工美、体育和娱乐用品制造业",
        "Manufacture of articles for culture, education, arts, sport and entertainment",
    ),
    "25": ("石油、煤炭及其他燃料加工业", "Processing of petroleum, coal and other fuels"),
    "26": ("化学原料和化学制品制造业", "Manufacture of raw chemical materials and chemical products"),
    "27": ("医药制造业", "Manufacture of medicines"),
    "28": ("化学纤维制造业", "Manufacture of chemical fibres"),
    "29": ("橡胶和塑料制品业", "Manufacture of rubber and plastics products"),
    "30": ("非金属矿物制品业", "Manufacture of non-metallic mineral products"),
    "31": ("黑色金属冶炼和压延加工业", "Smelting and pressing of ferrous metals"),
    "32": ("有色金属冶炼和压延加工业", "Smelting and pressing of non-ferrous metals"),
    "33": ("金属制品业", "Manufacture of metal products"),
    "34": ("通用设备制造业", "Manufacture of general-purpose machinery"),
    "35": ("专用设备制造业", "Manufacture of special-purpose machinery"),
    "36": ("汽车制造业", "Manufacture of automobiles"),
    "37": (
        "铁路、船舶、航空航天和其他运输设备制造业",
        "Manufacture of railway, ship, aerospace and other transport equipment",
    ),
    "38": ("电气机械和器材制造业", "Manufacture of electrical machinery and apparatus"),
    "39": (
        "计算机、通信和其他电子设备制造业",
        "Manufacture of computers, communication and other electronic equipment",
    ),
    "40": ("仪器仪表制造业", "Manufacture of measuring instruments"),
    "41": ("其他制造业", "Other manufacturing"),
    "42": ("废弃资源综合利用业", "Utilisation of waste resources"),
    "43": ("金属制品、机械和设备修理业", "Repair of metal products, machinery and equipment"),
    "54": ("道路运输业", "Road transport"),
}

# 4-digit classes (小类), or a 3-digit group (中类) where the data's code is a 2011-edition class
CLASSES: dict[str, tuple[str, str, str]] = {
    # code: (zh, en, level) — level "class" (4-digit 2017 class) or "group" (3-digit group shown)
    "1310": ("谷物磨制", "Grain milling", "group"),
    "1711": ("棉纺纱加工", "Cotton spinning", "class"),
    "1713": ("棉印染精加工", "Cotton printing and dyeing", "class"),
    "1810": ("机织服装制造", "Manufacture of woven apparel", "group"),
    "1951": ("纺织面料鞋制造", "Manufacture of textile footwear", "class"),
    "2110": ("木质家具制造", "Manufacture of wooden furniture", "class"),
    "2211": ("木竹浆制造", "Manufacture of wood and bamboo pulp", "class"),
    "2231": ("纸和纸板容器制造", "Manufacture of paper and paperboard containers", "class"),
    "2611": ("无机酸制造", "Manufacture of inorganic acids", "class"),
    "2614": ("有机化学原料制造", "Manufacture of organic chemical materials", "class"),
    "2641": ("涂料制造", "Manufacture of coatings", "class"),
    "2710": ("化学药品原料药制造", "Manufacture of chemical active pharmaceutical ingredients", "class"),
    "2822": ("涤纶纤维制造", "Manufacture of polyester fibre", "class"),
    "2927": ("日用塑料制品制造", "Manufacture of household plastic products", "class"),
    "2929": ("塑料零件及其他塑料制品制造", "Manufacture of plastic parts and other plastic products", "class"),
    "3011": ("水泥制造", "Manufacture of cement", "class"),
    "3021": ("水泥制品制造", "Manufacture of cement products", "class"),
    "3041": ("平板玻璃制造", "Manufacture of flat glass", "class"),
    "3110": ("炼铁", "Ironmaking", "class"),
    "3120": ("炼钢", "Steelmaking", "class"),
    "3130": ("钢压延加工", "Steel rolling", "class"),
    "3311": ("金属结构制造", "Manufacture of metal structures", "class"),
    "3411": ("锅炉及辅助设备制造", "Manufacture of boilers and auxiliary equipment", "class"),
    "3484": ("机械零部件加工", "Machining of mechanical parts", "class"),
    "3670": ("汽车零部件及配件制造", "Manufacture of automobile parts and accessories", "class"),
    "3813": ("微特电机及组件制造", "Manufacture of micro and special motors", "class"),
    "3831": ("电线、电缆制造", "Manufacture of wires and cables", "class"),
    "3911": ("计算机整机制造", "Manufacture of complete computers", "class"),
    "3971": ("电子真空器件制造", "Manufacture of electron vacuum devices", "class"),
    "3981": ("电阻电容电感元件制造", "Manufacture of resistors, capacitors and inductors", "class"),
    "3982": ("电子电路制造", "Manufacture of electronic circuits", "class"),
    "5430": ("道路货物运输", "Road freight transport", "group"),
}


def industry_name(code: str | None, lang: str) -> str:
    """The name of a 4-digit code (or its division when the class is not listed); '' if unknown."""
    if not code:
        return ""
    code = str(code).strip()
    k = 0 if lang == "zh" else 1
    if code in CLASSES:
        return CLASSES[code][k]
    if code[:2] in DIVISIONS:
        return DIVISIONS[code[:2]][k]
    return ""


def division_name(code: str | None, lang: str) -> str:
    if not code:
        return ""
    d = DIVISIONS.get(str(code).strip()[:2])
    return d[0 if lang == "zh" else 1] if d else ""
