"""Static, realistic-looking values the order market draws from (shops, items, addresses, texts).

Pure data: nothing here is random by itself; the market picks with its seeded RNG.
"""

from __future__ import annotations

from typing import NamedTuple


class Item(NamedTuple):
    title: str
    price_cents: int
    cid: int
    skus: tuple[str, ...]


SHOP_NICKS: tuple[str, ...] = (
    "南山优品旗舰店",
    "江南布衣小铺",
    "极客数码专营店",
    "小熊母婴生活馆",
    "山野茶舍",
    "cool-gear-store",
    "北国粮仓",
    "云端家居official",
)

ITEMS: tuple[Item, ...] = (
    Item("纯棉短袖T恤 男 夏季宽松", 5900, 50000436, ("颜色分类:白色;尺码:L", "颜色分类:黑色;尺码:XL")),
    Item("无线蓝牙耳机 降噪 长续航", 19900, 50008090, ("颜色分类:白色", "颜色分类:星空灰")),
    Item("婴儿纸尿裤 L码 52片", 8990, 50012420, ("尺码:L", "尺码:XL")),
    Item("明前龙井 2024新茶 250g", 16800, 50008825, ("净含量:250g", "净含量:500g")),
    Item("五常大米 10kg 当季新米", 7990, 50016422, ("规格:10kg",)),
    Item("北欧实木餐椅 2把装", 45900, 50020632, ("颜色分类:原木色", "颜色分类:胡桃色")),
    Item("USB-C 快充数据线 1.5m", 1990, 50003850, ("长度:1.5m", "长度:2m")),
    Item("加厚珊瑚绒毛毯 150x200", 6990, 50008163, ("颜色分类:浅灰", "颜色分类:米白")),
    Item("Mechanical keyboard 87 keys", 29900, 50012320, ("Switch:Red", "Switch:Brown")),
    Item("儿童保温杯 316不锈钢", 6500, 50012438, ("颜色分类:粉色", "颜色分类:蓝色")),
    Item("手机话费充值 100元", 9980, 150401, ()),
    Item("游戏点卡 50元", 4950, 150402, ()),
)

# (state, city, district, zip)
REGIONS: tuple[tuple[str, str, str, str], ...] = (
    ("浙江省", "杭州市", "余杭区", "311100"),
    ("上海", "上海市", "浦东新区", "200120"),
    ("广东省", "深圳市", "南山区", "518000"),
    ("北京", "北京市", "朝阳区", "100020"),
    ("四川省", "成都市", "武侯区", "610041"),
    ("江苏省", "南京市", "鼓楼区", "210009"),
    ("湖北省", "武汉市", "洪山区", "430070"),
    ("黑龙江省", "哈尔滨市", "南岗区", "150001"),
)

STREETS: tuple[str, ...] = ("文一西路", "世纪大道", "科技园南路", "建国路", "人民南路", "中山北路", "珞喻路")
SURNAMES: tuple[str, ...] = ("王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴")
BUYER_PREFIXES: tuple[str, ...] = ("tb", "小", "快乐的", "cat_", "阿", "momo")

# Buyer messages and seller memos; some carry raw TAB / CR / LF, as real ones do
# (docs/top-api.md#http-request).
BUYER_MESSAGES: tuple[str, ...] = (
    "请尽快发货，谢谢",
    "周末不在家\t请工作日送达",
    "发顺丰可以吗？\n补差价也行",
    "送人的，不要放价格单",
    "please ship ASAP",
    "颜色要和图片一样\r\n谢谢老板",
)
SELLER_MEMOS: tuple[str, ...] = (
    "已联系买家确认地址",
    "补发赠品\t小样x2",
    "优先发货\n客户是老顾客",
    "缺货，等待调货",
    "改地址后已重新打单",
)

LOGISTICS_COMPANIES: tuple[str, ...] = (
    "中通快递",
    "圆通速递",
    "顺丰速运",
    "韵达快递",
    "申通快递",
    "京东物流",
)
TRADE_FROMS: tuple[str, ...] = ("WAP,WAP", "TAOBAO", "WAP", "TOP", "JHS", "HITAO")
SHIPPING_TYPES: tuple[str, ...] = ("express", "express", "express", "free", "ems", "post")
