"""Every string a report shows, in Chinese and English, and the rulebooks' labels in both languages.

The bundled rulebooks are written in English with a few Chinese titles in parentheses. Until they
carry both languages themselves (see docs/reports.md, "labels that belong in the rulebooks"), the
labels of their ratings, levels, indicators and inputs live here, keyed by rulebook id and name.
A name missing here falls back to the rulebook's own title or description, then to the name.

Level colours: the pilots publish coloured labels (Quzhou's four colours are official, DB3308/T
095-2021); the colours of Huzhou's five levels and of the nine Shenzhen grades are this project's
choice (status: assumed) on a green-to-red scale.
"""

from __future__ import annotations

import math
from typing import Any

LANGS = ("zh", "en")

# -- user-interface strings ------------------------------------------------------------------------
UI: dict[str, tuple[str, str]] = {
    "firm_report": ("企业碳评价报告", "Carbon rating report"),
    "portfolio_report": ("组合碳评价报告", "Portfolio carbon rating report"),
    "change_report": ("规则变更影响报告", "Rulebook change report"),
    "firm": ("企业", "Firm"),
    "firm_name": ("企业名称", "Firm name"),
    "credit_code": ("统一社会信用代码", "Unified social credit code"),
    "industry": ("行业", "Industry"),
    "division": ("行业大类", "Industry division"),
    "city": ("城市", "City"),
    "size": ("规模", "Size"),
    "year": ("年度", "Year"),
    "rating": ("评价结果", "Rating"),
    "method": ("评价方法", "Method"),
    "rated_value": ("评价值", "Rated value"),
    "band": ("所在区间", "Band"),
    "other_ratings": ("其他标签", "Other labels"),
    "incentive": ("信贷激励与服务", "Loan incentive and services"),
    "rate_bp": ("贷款利率调整", "Loan rate adjustment"),
    "bp": ("基点", "bp"),
    "credit_policy": ("信贷政策", "Credit policy"),
    "services": ("服务", "Services"),
    "subsidy_pct": ("补贴比例", "Subsidy"),
    "no_incentive": ("该等级无信贷激励", "No incentive at this level"),
    "what_it_takes": ("距相邻等级", "Distance to the neighbouring levels"),
    "next_better": ("上一更优等级", "Next better level"),
    "next_worse": ("下一较差等级", "Next worse level"),
    "margin": ("差距", "Margin"),
    "rule": ("条件", "Condition"),
    "cut_needed": ("需减排", "Cut needed"),
    "cut_by_input": ("削减对象（单项）", "What is cut (alone)"),
    "not_reachable": ("单靠此项无法达到", "not reachable by this alone"),
    "best_level": ("已处最优等级", "Already at the best level"),
    "worst_level": ("已处最低等级", "Already at the lowest level"),
    "last_year": ("上年评价", "Last year's rating"),
    "no_prior_year": ("数据中无上一年度记录", "No previous year in the data"),
    "prior_unrated": ("上年未评价", "Not rated last year"),
    "unrated": ("未评价", "Not rated"),
    "unrated_why": ("未能评价的原因", "Why this firm-year is not rated"),
    "charts": ("图表", "Charts"),
    "energy_structure": ("能源结构（吨标准煤）", "Energy structure (tce)"),
    "emissions_by_source": ("按排放源与范围的排放（吨二氧化碳）", "Emissions by source and scope (tCO2)"),
    "over_years": ("历年排放与强度", "Emissions and intensity over the years"),
    "peer_position": ("同行分布中的位置", "Position among peers"),
    "indicator_scores": ("指标得分", "Indicator scores"),
    "data_table": ("数据表", "Data table"),
    "carrier": ("能源品种", "Carrier"),
    "source": ("排放源", "Source"),
    "scope": ("范围", "Scope"),
    "share": ("占比", "Share"),
    "value": ("数值", "Value"),
    "score": ("得分", "Score"),
    "indicator": ("指标", "Indicator"),
    "emissions": ("排放量", "Emissions"),
    "intensity": ("强度", "Intensity"),
    "peers": ("同行数", "Peers"),
    "peer_group": ("同行组", "Peer group"),
    "group_used": ("采用的分组", "Group used"),
    "benchmark": ("基准", "Benchmark"),
    "firm_value": ("本企业", "This firm"),
    "band_edges": ("等级分界", "Band edges"),
    "no_energy": ("无能源消费记录", "No energy on record"),
    "no_emissions": ("无排放记录", "No emissions on record"),
    "no_indicators": ("本方法不设分项得分", "This method has no indicator scores"),
    "no_peers": ("无同行分布（未评价或无基准）", "No peer distribution (not rated or no benchmark)"),
    "one_year": ("数据中仅有一个年度", "Only one year in the data"),
    "peer_fallback": (
        "同行不足，采用公布值或缺省值；图中为当年全部企业",
        "Too few peers: a published or default value was used; the chart shows all firms of the year",
    ),
    "data_quality": ("数据质量", "Data quality"),
    "data_issues": ("数据问题", "Data problems"),
    "no_issues": ("无数据问题", "No data problems"),
    "fallbacks": ("回退", "Fallbacks"),
    "no_fallbacks": ("无回退", "No fallbacks"),
    "defaults": ("采用缺省值的输入", "Inputs that took a default"),
    "measured": ("实测值", "measured"),
    "default": ("缺省值", "default"),
    "assumed_params": ("假设参数（待校准）", "Assumed parameters (to be calibrated)"),
    "coverage": ("数据覆盖", "Coverage"),
    "coverage_none": ("数据未附带采集覆盖信息", "The data carries no acquisition coverage"),
    "provenance": ("数据来源与可验证性", "Provenance and verification"),
    "rulebook": ("规则手册", "Rulebook"),
    "version": ("版本", "Version"),
    "rulebook_hash": ("规则哈希", "Rulebook hash"),
    "engine_version": ("引擎版本", "Engine version"),
    "data_hash": ("数据哈希", "Data hash"),
    "input_row_hash": ("输入行哈希", "Input row hash"),
    "tables_hash": ("基准表哈希", "Benchmark tables hash"),
    "date": ("报告日期", "Report date"),
    "digest": ("审计轨迹摘要", "Audit trail digest"),
    "verify_how": (
        "用 `ruleengine explain … --format json` 生成审计轨迹，以 `ruleengine verify` 复核；"
        "摘要为该轨迹规范 JSON 的 SHA-256。",
        "Make the audit trail with `ruleengine explain … --format json` and check it with `ruleengine verify`; "
        "the digest is the SHA-256 of the trail's canonical JSON.",
    ),
    "qr_alt": ("二维码：规则、企业、年度与摘要", "QR code: rulebook, firm, year and digest"),
    "appendix": ("附录：审计轨迹", "Appendix: audit trail"),
    "appendix_summary": ("展开完整审计轨迹（{n} 项）", "Show the full audit trail ({n} items)"),
    "appendix_left_out": (
        "本报告未附审计轨迹（{n} 项）：用上述 `ruleengine explain` 命令生成，摘要与本页一致。",
        "The audit trail ({n} items) is left out of this report: make it with the `ruleengine explain` command "
        "above; its digest is the one on this page.",
    ),
    "zero_inputs": ("值为零或空的输入与变量（{n} 项）", "Inputs and variables that are zero or empty ({n})"),
    "name": ("名称", "Name"),
    "kind": ("类型", "Kind"),
    "unit": ("单位", "Unit"),
    "formula": ("公式", "Formula"),
    "decisions": ("判定", "Decisions"),
    "kind_input": ("输入", "input"),
    "kind_parameter": ("参数", "parameter"),
    "kind_variable": ("变量", "variable"),
    "kind_benchmark": ("基准", "benchmark"),
    "scope1": ("范围一", "Scope 1"),
    "scope2": ("范围二", "Scope 2"),
    "outside_boundary": ("不在本方法边界内", "outside this method's boundary"),
    "in_boundary": ("计入", "counted"),
    "status": ("状态", "Status"),
    "rated": ("已评价", "rated"),
    "generated_by": ("由 ruleengine 生成", "Made with ruleengine"),
    # portfolio
    "distribution": ("评价分布", "Rating distribution"),
    "count": ("企业数", "Firms"),
    "by_industry": ("按行业", "By industry"),
    "by_size": ("按规模", "By size"),
    "incentives_effect": ("激励及年度利息影响", "Incentives and their annual interest effect"),
    "loan": ("贷款余额（万元）", "Loans (10k CNY)"),
    "interest_effect": ("年利息影响（元）", "Annual interest effect (CNY)"),
    "no_loans": (
        "数据中无贷款金额列（loan_amount_10k_cny），无法计算利息影响",
        "The data has no loan_amount_10k_cny column: no interest effect",
    ),
    "unrated_firms": ("未评价企业及原因", "Unrated firms and why"),
    "none": ("无", "None"),
    "migration": ("与上年相比的等级迁移", "Migration against the previous year"),
    "previous": ("上年", "Previous year"),
    "current": ("本年", "This year"),
    "closest_edge": ("最接近等级分界的企业", "Firms closest to a band edge"),
    "total": ("合计", "Total"),
    "firms_rated": ("已评价 {rated} 家，未评价 {unrated} 家", "{rated} rated, {unrated} not rated"),
    "reason": ("原因", "Reason"),
    "direction": ("方向", "Direction"),
    "better": ("更优", "better"),
    "worse": ("较差", "worse"),
    "no_previous_portfolio": ("数据中无上一年度，无法比较迁移", "No previous year in the data: no migration"),
    # change report
    "changes": ("结构性变更", "Structural changes"),
    "no_changes": ("无实质变更", "No change of meaning"),
    "location": ("位置", "Location"),
    "old": ("旧", "Old"),
    "new": ("新", "New"),
    "what": ("变更", "Change"),
    "migration_matrix": ("等级迁移矩阵（旧 × 新）", "Migration matrix (old × new)"),
    "movers": ("等级变动企业", "Firms that moved"),
    "movers_by": ("各标签与类别的变动", "Moves by label set and category"),
    "raise": ("需增加", "raise"),
    "category": ("类别", "Category"),
    "lending_effect": ("信贷影响", "Lending effect"),
    "attribution": ("变更归因", "Attribution"),
    "no_data_impact": ("未提供组合数据（--data），无影响分析", "No portfolio given (--data): no impact"),
    "up": ("上调", "up"),
    "down": ("下调", "down"),
    "same": ("不变", "same"),
}

SIZES: dict[str, tuple[str, str]] = {
    "large": ("大型", "large"),
    "medium": ("中型", "medium"),
    "small": ("小型", "small"),
    "micro": ("微型", "micro"),
}

CITIES: dict[str, tuple[str, str]] = {
    "huzhou": ("湖州", "Huzhou"),
    "quzhou": ("衢州", "Quzhou"),
    "shenzhen": ("深圳", "Shenzhen"),
}

# -- names shared by every rulebook (inputs of the data contract, accounting-library variables) -----
COMMON: dict[str, tuple[str, str]] = {
    "raw_coal_t": ("原煤", "raw coal"),
    "coke_t": ("焦炭", "coke"),
    "crude_oil_t": ("原油", "crude oil"),
    "fuel_oil_t": ("燃料油", "fuel oil"),
    "gasoline_t": ("汽油", "gasoline"),
    "kerosene_t": ("煤油", "kerosene"),
    "diesel_t": ("柴油", "diesel"),
    "lpg_t": ("液化石油气", "LPG"),
    "natural_gas_10k_nm3": ("天然气", "natural gas"),
    "vehicle_gasoline_t": ("车用汽油", "vehicle gasoline"),
    "vehicle_diesel_t": ("车用柴油", "vehicle diesel"),
    "electricity_mwh": ("外购电力", "purchased electricity"),
    "green_electricity_mwh": ("绿色电力", "green electricity"),
    "onsite_renewable_mwh": ("自发自用可再生电力", "on-site renewable power"),
    "heat_gj": ("外购热力", "purchased heat"),
    "clinker_t": ("熟料产量", "clinker produced"),
    "limestone_t": ("石灰石", "limestone"),
    "dolomite_t": ("白云石", "dolomite"),
    "employees": ("从业人数", "employees"),
    "output_value_10k_cny": ("工业总产值", "output value"),
    "value_added_10k_cny": ("工业增加值", "value added"),
    "revenue_10k_cny": ("营业收入", "revenue"),
    "tax_10k_cny": ("税收", "taxes paid"),
    "carbon_sink_tco2": ("碳汇", "carbon sinks"),
    "firm_id": ("企业代码", "firm id"),
    "year": ("年度", "year"),
    "industry": ("行业代码", "industry code"),
    "grid_region": ("电网区域", "grid region"),
    "city": ("城市", "city"),
    "size": ("规模", "size"),
    # carriers (energy structure) and sources (emissions)
    "coal_tce": ("煤炭", "coal"),
    "oil_tce": ("油品", "oil"),
    "gas_tce": ("天然气", "natural gas"),
    "electricity_tce": ("电力", "electricity"),
    "heat_tce": ("热力", "heat"),
    "vehicle_fuels_tce": ("车用燃料", "vehicle fuels"),
    "coal_co2_tco2": ("煤炭燃烧", "coal combustion"),
    "oil_co2_tco2": ("油品燃烧", "oil combustion"),
    "gas_co2_tco2": ("天然气燃烧", "gas combustion"),
    "mobile_co2_tco2": ("移动源（自有车辆）", "mobile (own vehicles)"),
    "process_co2_tco2": ("工业过程", "industrial process"),
    "electricity_location_tco2": ("外购电力", "purchased electricity"),
    "electricity_green_zero_tco2": ("外购电力（绿电计零）", "purchased electricity (green power at zero)"),
    "electricity_market_tco2": ("外购电力（市场法）", "purchased electricity (market-based)"),
    "heat_tco2": ("外购热力", "purchased heat"),
    "scope1_tco2": ("范围一排放", "scope 1 emissions"),
    "scope2_tco2": ("范围二排放", "scope 2 emissions"),
    "emissions_tco2": ("二氧化碳排放总量", "total CO2 emissions"),
    "energy_tce": ("综合能耗", "energy use"),
}

# -- per rulebook ------------------------------------------------------------------------------------
BOOKS: dict[str, dict[str, Any]] = {
    "huzhou": {
        "title": ("湖州工业碳效码", "Huzhou industrial carbon efficiency code"),
        "ratings": {
            "level": ("碳效等级", "Carbon efficiency level"),
            "carbon_label": ("碳排放强度标签", "Absolute carbon intensity label"),
        },
        "levels": {
            "level": {
                "1": ("一级（最优）", "level 1 (best)"),
                "2": ("二级", "level 2"),
                "3": ("三级", "level 3"),
                "4": ("四级", "level 4"),
                "5": ("五级（最差）", "level 5 (worst)"),
            },
            "carbon_label": {
                "low-carbon": ("低碳", "low-carbon"),
                "medium-carbon": ("中碳", "medium-carbon"),
                "high-carbon": ("高碳", "high-carbon"),
            },
        },
        "colours": {"1": "#1b7a3a", "2": "#7cc26b", "3": "#f0c419", "4": "#f08a24", "5": "#d7301f"},
        "names": {
            "k": ("碳效值 K", "carbon efficiency K"),
            "intensity": ("碳排放强度 L（吨CO2/万元增加值）", "intensity L (tCO2 per 10k CNY value added)"),
            "industry_intensity": ("行业碳排放强度", "industry intensity"),
            "neutrality_rate": ("碳中和率", "carbon-neutrality rate"),
            "net_emissions_tco2": ("净排放", "net emissions"),
        },
        "value": "k",
        "intensity": "intensity",
        "indicators": [],
    },
    "quzhou": {
        "title": ("衢州企业碳账户", "Quzhou enterprise carbon account"),
        "ratings": {"colour": ("碳账户贴标", "Carbon account colour")},
        "levels": {
            "colour": {
                "deep-green": ("深绿", "deep green"),
                "light-green": ("浅绿", "light green"),
                "yellow": ("黄色", "yellow"),
                "red": ("红色", "red"),
            }
        },
        "colours": {"deep-green": "#1b7a3a", "light-green": "#8fd17c", "yellow": "#f0c419", "red": "#d7301f"},
        "names": {
            "composite_score": ("综合得分", "composite score"),
            "advancement_score": ("行业先进性", "industry advancement"),
            "regional_score": ("区域贡献度", "regional contribution"),
            "decline_score": ("历史下降", "historical decline"),
            "intensity_va": ("单位增加值碳排放（吨CO2/万元）", "CO2 per 10k CNY value added"),
            "intensity_output": ("单位产值碳排放", "CO2 per 10k CNY output"),
            "intensity_tax": ("单位税收碳排放", "CO2 per 10k CNY tax"),
            "industry_intensity_va": ("行业单位增加值碳排放", "industry CO2 per value added"),
        },
        "value": "composite_score",
        "intensity": "intensity_va",
        "indicators": ["advancement_score", "regional_score", "decline_score"],
    },
    "shenzhen": {
        "title": ("深圳企业碳账户评价", "Shenzhen corporate carbon account rating"),
        "ratings": {"grade": ("碳账户评级", "Carbon account grade")},
        "levels": {"grade": {g: (g, g) for g in ("AAA", "AA", "A", "BBB", "BB", "B", "CCC", "CC", "C")}},
        "colours": {
            "AAA": "#1b7a3a",
            "AA": "#3f9b4a",
            "A": "#7cc26b",
            "BBB": "#b8d96a",
            "BB": "#f0c419",
            "B": "#f5a623",
            "CCC": "#f08a24",
            "CC": "#e2582a",
            "C": "#d7301f",
        },
        "names": {
            "total_score": ("总分", "total score"),
            "energy_efficiency_theme": ("能效", "energy efficiency"),
            "carbon_efficiency_theme": ("碳效", "carbon efficiency"),
            "energy_saving_theme": ("节能成效", "energy saving"),
            "emission_reduction_theme": ("减排成效", "emission reduction"),
            "industry_efficiency_theme": ("行业效率", "industry efficiency"),
            "carbon_intensity": ("碳排放强度（吨CO2/万元营收）", "carbon intensity (tCO2 per 10k CNY revenue)"),
            "industry_position": ("行业内位置", "position in the industry"),
        },
        "value": "total_score",
        "intensity": "carbon_intensity",
        "indicators": [
            "energy_efficiency_theme",
            "carbon_efficiency_theme",
            "energy_saving_theme",
            "emission_reduction_theme",
            "industry_efficiency_theme",
        ],
    },
    "national": {
        "title": ("全国统一企业碳评级（草案）", "National draft - unified corporate carbon rating"),
        "ratings": {"grade": ("全国碳等级（草案）", "National carbon grade (draft)")},
        "levels": {
            "grade": {
                "A": ("A 领先", "A leading"),
                "B": ("B 先进", "B advanced"),
                "C": ("C 平均", "C average"),
                "D": ("D 落后", "D lagging"),
                "E": ("E 高碳", "E high-carbon"),
            }
        },
        "colours": {"A": "#1b7a3a", "B": "#7cc26b", "C": "#f0c419", "D": "#f08a24", "E": "#d7301f"},
        "names": {
            "k": ("碳效值 K", "carbon efficiency K"),
            "intensity": ("碳排放强度（吨CO2/万元增加值）", "intensity (tCO2 per 10k CNY value added)"),
            "industry_intensity": ("行业碳排放强度", "industry intensity"),
        },
        "value": "k",
        "intensity": "intensity",
        "indicators": [],
    },
}

# services and credit policies of the bundled incentives tables, translated
POLICY: dict[str, str] = {
    "carbon efficiency loan": "碳效贷",
    "standard terms": "标准条款",
    "free energy-saving assessment": "免费节能诊断",
    "carbon-reduction plan": "减碳方案",
    "Carbon Finance Easy Loan": "碳融通（碳金融易贷）",
    "cautious support": "审慎支持",
    "restricted from new credit": "限制新增授信",
    "differentiated rate at the maximum discount; longer loan term": "差异化利率（最大优惠）；延长贷款期限",
    "differentiated rate; longer loan term": "差异化利率；延长贷款期限",
    "differentiated rate": "差异化利率",
}

GROUPS: dict[str, tuple[str, str]] = {
    "industry": ("同行业小类（4位代码）", "same industry class (4-digit)"),
    "industry_division": ("同行业大类（2位代码）", "same industry division (2-digit)"),
    "all": ("当年全部企业", "all firms of the year"),
    "fallback": ("公布值或缺省值（同行不足）", "published or default value (too few peers)"),
}

GREY = "#8c8c8c"


class Lang:
    """Strings and number formats of one language."""

    def __init__(self, lang: str, book: str = "") -> None:
        if lang not in LANGS:
            from ..errors import RuleEngineError

            raise RuleEngineError(f"unknown report language '{lang}': use zh or en")
        self.lang = lang
        self.k = 0 if lang == "zh" else 1
        self.book = BOOKS.get(book, {})

    def t(self, key: str, **kw: Any) -> str:
        s = UI[key][self.k]
        return s.format(**kw) if kw else s

    def pick(self, pair: tuple[str, str] | None, fallback: str = "") -> str:
        return pair[self.k] if pair else fallback

    def name(self, name: str, fallback: str = "") -> str:
        """Label of a variable or input of the current rulebook."""
        pair = self.book.get("names", {}).get(name) or COMMON.get(name)
        return pair[self.k] if pair else (fallback or name)

    def title(self, fallback: str) -> str:
        return self.pick(self.book.get("title"), fallback)

    def rating_title(self, rating: str, fallback: str) -> str:
        return self.pick(self.book.get("ratings", {}).get(rating), fallback)

    def level(self, rating: str, level: str, fallback: str = "") -> str:
        pair = self.book.get("levels", {}).get(rating, {}).get(level)
        return pair[self.k] if pair else (fallback or level)

    def colour(self, level: str) -> str:
        return str(self.book.get("colours", {}).get(level, GREY))

    def policy(self, text: str) -> str:
        if self.lang == "zh":
            return POLICY.get(text, text)
        return text

    def size(self, s: str | None) -> str:
        return self.pick(SIZES.get(s or ""), s or "")

    def city(self, c: str | None) -> str:
        return self.pick(CITIES.get(c or ""), c or "")

    def group(self, g: str) -> str:
        return self.pick(GROUPS.get(g), g)

    # numbers: both languages group thousands with ',' (GB/T 15835-2011 allows it; banks use it);
    # Chinese money in 万元 as the data gives it, English in 10k CNY
    def num(self, x: Any, digits: int = 2) -> str:
        if x is None:
            return "—"
        try:
            f = float(x)
        except (TypeError, ValueError):
            return str(x)
        if math.isnan(f):
            return "—"
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        s = f"{f:,.{digits}f}"
        if s.startswith("-"):
            s = "−" + s[1:]
        return "0" if s in ("0", "−0") or (digits and float(s.replace(",", "").replace("−", "-")) == 0) else s

    def sig(self, x: Any, n: int = 4) -> str:
        """A value with n significant digits (for ratios like K)."""
        if x is None:
            return "—"
        f = float(x)
        if math.isnan(f):
            return "—"
        if f == 0:
            return "0"
        digits = max(0, n - 1 - int(math.floor(math.log10(abs(f)))))
        return self.num(f, min(digits, 6))

    def pct(self, x: Any, digits: int = 1) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "—"
        return f"{self.num(x, digits)}%"

    def bp(self, x: Any) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "—"
        f = float(x)
        sign = "+" if f > 0 else ""
        return f"{sign}{self.num(f, 0)} {self.t('bp')}"
